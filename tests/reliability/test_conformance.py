"""Output conformance at volume: every SR and SC from a multi-study run passes dciodvfy (and
the SRs DicomSRValidator) with zero errors, and Orthanc accepted every one of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.helpers import SC_CLASS, SR_CLASSES, figures, make_copies, small_cr
from tests.support.data import new_uid
from tests.support.nodecfg import orthanc_destination, read_ports, write_node_config
from tests.support.peers import storescu, wait_until
from tests.support.validators import dciodvfy, sr_validate


def run_conformance(tmp_path: Path, orthanc, node_factory, *, studies: int, per_study: int):
    config = write_node_config(tmp_path / "node", destinations=[orthanc_destination(orthanc)])
    port = read_ports(config)[0]
    node = node_factory(config).wait_ready()
    base = small_cr(tmp_path / "base.dcm", size=384)
    study_uids = [new_uid("conformance", tmp_path, s) for s in range(studies)]
    for s, study in enumerate(study_uids):
        files = make_copies(base, tmp_path / "in" / str(s), per_study, study_uid=study)
        storescu(files, port=port, timeout=300).check()
    total = studies * per_study

    def ours() -> dict[str, list[str]]:
        found: dict[str, list[str]] = {"sc": [], "sr": []}
        for study in study_uids:
            for instance in orthanc.find_instances(StudyInstanceUID=study):
                tags = orthanc.get(f"/instances/{instance}/simplified-tags")
                if tags.get("Manufacturer") != "dicomnode":
                    continue
                if tags["SOPClassUID"] == SC_CLASS:
                    found["sc"].append(instance)
                elif tags["SOPClassUID"] in SR_CLASSES:
                    found["sr"].append(instance)
        return found

    def complete() -> dict[str, list[str]] | None:
        found = ours()
        return found if len(found["sc"]) == total and len(found["sr"]) >= studies else None

    found = wait_until(complete, timeout=60 + 6 * total, what=f"{total} SC + SRs in Orthanc")
    out = tmp_path / "out"
    out.mkdir()
    errors: dict[str, list[str]] = {}
    sr_checked = 0
    for kind, instances in found.items():
        for instance in instances:
            path = out / f"{kind}-{instance}.dcm"
            path.write_bytes(orthanc.get_bytes(f"/instances/{instance}/file"))
            problems = dciodvfy(path)
            if kind == "sr":
                problems += sr_validate(path)
                sr_checked += 1
            if problems:
                errors[path.name] = problems
    figures("output conformance", images=total, studies=studies,
            sc_in_orthanc=len(found["sc"]), sr_in_orthanc=len(found["sr"]),
            dciodvfy_checked=len(found["sc"]) + len(found["sr"]), sr_validated=sr_checked,
            files_with_errors=len(errors))  # fmt: skip
    assert not errors, errors
    assert node.running


def test_twenty_images_all_outputs_conform(tmp_path, orthanc, node_factory):
    run_conformance(tmp_path, orthanc, node_factory, studies=4, per_study=5)


@pytest.mark.slow
def test_hundred_images_all_outputs_conform(tmp_path, orthanc, node_factory):
    run_conformance(tmp_path, orthanc, node_factory, studies=10, per_study=10)
