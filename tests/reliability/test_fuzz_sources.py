"""Fuzzed sources for the SR and SC builders (issue 17 item 3): whatever a source looks like,
its outputs pass dciodvfy with no error, or the builder refuses it with a reason an operator
understands — and a study is reported for the images that can be, or ends explained.

Cases come from `odd_sources.generate` (seeded mutations of real RG3/RG1/cat headers). Pure
builders for hundreds of cases (the default run keeps ≥ 300; `make reliability` runs more),
and a handful of two-image studies end to end through the real storage step, pipeline and
worker with the tiny model.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom import config as pydicom_config
from pydicom.valuerep import validate_value

from dicomnode.imaging.preprocess import to_grayscale
from dicomnode.model.classifier import Classifier, Outcome, Prediction
from dicomnode.objects.sc import build_sc
from dicomnode.objects.sources import SourceRejected, build_leaving_out
from dicomnode.objects.sr import build_sr
from dicomnode.store.tables import JobState, ResultKind
from tests.reliability.odd_sources import Case, bases, flip_header, generate, read
from tests.support.data import TINY_ARCH, cat_dx
from tests.support.inprocess import inprocess_node
from tests.support.results import result_card
from tests.support.validators import run_dciodvfy

FAST_CASES = 320
SLOW_CASES = 2000
#: Files validated per batch (then deleted, so a large run needs little disk).
BATCH = 48
PREDICTION = Prediction(
    0.87, Outcome.POSITIVE, np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
)


@pytest.fixture(scope="module")
def images() -> dict[str, np.ndarray]:
    """Each base radiograph's display image, reduced (the header is what is fuzzed)."""
    return {b.name: to_grayscale(pydicom.dcmread(b.path))[::6, ::6].copy() for b in bases()}


def _valid_uid(value: object) -> bool:
    try:
        validate_value("UI", str(value or ""), pydicom_config.RAISE)
    except ValueError:
        return False
    return str(value or "").startswith(("1.", "2."))  # a root dciodvfy accepts


def _outputs(case: Case, source: Dataset, image: np.ndarray, folder: Path) -> Iterator[Path]:
    """Build the case's SC and its two-image study SR (the odd source and a plain partner);
    yield the written files. Raises AssertionError for anything but an explained refusal."""
    card = result_card()
    label = f"case {case.index} ({case.base}: {', '.join(case.mutations)})"
    try:
        sc = build_sc(source=source, image=image, prediction=PREDICTION, card=card,
                      sop_instance_uid=f"1.2.826.0.1.3680043.8.498.17.8.{case.index}.1",
                      series_instance_uid="1.2.826.0.1.3680043.8.498.17.8.1",
                      instance_number=1)  # fmt: skip
    except SourceRejected as exc:
        assert exc.reason and "internal" not in exc.reason, label
    except Exception as exc:
        raise AssertionError(f"{label}: SC builder raised {type(exc).__name__}: {exc}") from exc
    else:
        yield _write(sc, folder / f"{case.index}-sc.dcm")

    members = [source]
    try:
        study = source.get("StudyInstanceUID")
    except Exception:  # a flipped VR pydicom cannot decode: no partner of the same study
        study = None
    if _valid_uid(study):
        partner = pydicom.dcmread(next(b.path for b in bases() if b.name == case.base),
                                  stop_before_pixels=True)  # fmt: skip
        partner.StudyInstanceUID = study
        partner.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.17.8.{case.index}.2"
        members.append(partner)

    def build(chosen: list[Dataset]) -> Dataset:
        return build_sr(sources=chosen, predictions=[PREDICTION] * len(chosen), card=card,
                        sop_instance_uid=f"1.2.826.0.1.3680043.8.498.17.8.{case.index}.3",
                        series_instance_uid="1.2.826.0.1.3680043.8.498.17.8.2")  # fmt: skip

    sr, left_out = build_leaving_out(members, build)
    for reason in left_out.values():
        assert reason and "details in the node log" not in reason, f"{label}: {reason}"
    if len(members) == 2:
        assert 1 not in left_out, f"{label}: the plain partner was left out: {left_out}"
        assert sr is not None, label
    if sr is not None:
        yield _write(sr, folder / f"{case.index}-sr.dcm")


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    pydicom.dcmread(path)  # write, then read back
    return path


def _validate(paths: list[Path]) -> list[str]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        found = list(pool.map(run_dciodvfy, paths))
    problems = [f"{p.name}: {f.errors[:3]}" for p, f in zip(paths, found, strict=True) if f.errors]
    for path in paths:
        path.unlink()
    return problems


def _fuzz(count: int, folder: Path, images: dict[str, np.ndarray], *, seed: int) -> None:
    cases = generate(count, seed=seed)
    unreadable, pending, problems = 0, [], []
    for case in cases:
        source = read(case)
        if source is None:
            unreadable += 1  # the node fails such a job when reading it, with a reason
            continue
        pending.extend(_outputs(case, source, images[case.base], folder))
        if len(pending) >= BATCH:
            problems += _validate(pending)
            pending = []
    problems += _validate(pending)
    assert problems == [], f"{len(problems)} outputs with dciodvfy errors: {problems[:10]}"
    assert unreadable < count // 10  # the cases exercise the builders, not only the reader


def test_fuzzed_sources_give_valid_outputs_or_explained_refusals(tmp_path, images, debian_tools):
    _fuzz(FAST_CASES, tmp_path, images, seed=17)


@pytest.mark.slow
def test_many_fuzzed_sources_give_valid_outputs_or_explained_refusals(
    tmp_path, images, debian_tools
):
    _fuzz(SLOW_CASES, tmp_path, images, seed=1017)


# --- end to end -----------------------------------------------------------------------------------


def _full(case: Case, source: Dataset) -> bytes:
    """The fuzzed header with its base radiograph's pixel data, as a sender would store it."""
    base = pydicom.dcmread(next(b.path for b in bases() if b.name == case.base))
    for element in base:
        if element.tag.group == 0x0028 or element.tag >= 0x7FE00010:
            source[element.tag] = element
    source.file_meta = base.file_meta
    source.file_meta.MediaStorageSOPInstanceUID = str(source.get("SOPInstanceUID", ""))
    buffer = io.BytesIO()
    source.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def test_odd_studies_through_the_worker_end_reported_or_explained(tmp_path):
    classifier = Classifier.demo(architecture=TINY_ARCH, device="cpu")
    node = inprocess_node(tmp_path, classifier=classifier)
    received = []
    for case in generate(12, seed=23):
        source = read(case)
        if source is None:
            continue
        # A study of its own: the odd image and a plain one of the same radiograph.
        source.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.17.6.{case.index}"
        partner = pydicom.dcmread(next(b.path for b in bases() if b.name == case.base))
        partner.StudyInstanceUID = source.StudyInstanceUID
        partner.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.17.7.{case.index}"
        partner.file_meta.MediaStorageSOPInstanceUID = partner.SOPInstanceUID
        buffer = io.BytesIO()
        partner.save_as(buffer, enforce_file_format=True)
        for data in (_full(case, source), buffer.getvalue()):
            if node.receive(data) == 0:
                received.append(str(source.StudyInstanceUID))
    # A bit-flipped cat.dcm (header only), as the issue found it: its study blocked before.
    for seed in range(6):
        cat = pydicom.dcmread(cat_dx())
        cat.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.17.6.90.{seed}"
        cat.SOPInstanceUID = cat.file_meta.MediaStorageSOPInstanceUID = f"{cat.StudyInstanceUID}.1"
        buffer = io.BytesIO()
        cat.save_as(buffer, enforce_file_format=True)
        flipped = flip_header(buffer.getvalue(), random.Random(seed), within=2048)
        if node.receive(flipped) == 0:
            received.append("cat")
    assert len(received) >= 16

    node.run_until_idle()  # raised, or looped, before

    studies = {j.study_instance_uid for j in node.jobs.list_jobs(limit=500)}
    assert len(studies) >= 10
    for study in studies:
        jobs = node.jobs.jobs_for_study(study)
        assert all(j.state != JobState.PROCESSING and j.state != JobState.QUEUED for j in jobs)
        for job in jobs:
            if job.state != JobState.CLASSIFIED:
                assert job.reason, job
                assert "internal error" not in job.reason and "unexpected" not in job.reason
        classified = [j for j in jobs if j.state == JobState.CLASSIFIED]
        record = node.jobs.study(study)
        assert record is not None
        if classified:
            assert record.report_version >= 1 and record.reported_job_count == len(classified)
            for path in node.result_paths(study, ResultKind.SR):
                assert run_dciodvfy(path).errors == [], path
    assert node.worker.step() is False
