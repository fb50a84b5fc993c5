"""Micro-batching: claim_batch hands out the oldest jobs once, and a batch gives the same
results as one image at a time (within the runtime check's tolerance), bad images failing alone."""

from __future__ import annotations

import threading

import pytest

from dicomnode.config import Settings
from dicomnode.ingest.admission import StoreContext, store_bytes
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.model.runtime import MAX_PROBABILITY_DELTA
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.spool import Spool
from dicomnode.store.tables import JobState
from dicomnode.work.pipeline import Pipeline
from tests.support import data


def _item(sop: str) -> Received:
    return Received(
        sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid="1.2.3", series_instance_uid="1.2.3.1", modality="CR",
        body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="p", study={},
    )  # fmt: skip


def test_claim_batch_takes_the_oldest_up_to_the_limit_and_never_twice(tmp_path):
    jobs = Jobs(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    ids = [jobs.enqueue(_item(f"1.2.3.{i}"))[0] for i in range(50)]
    first = jobs.claim_batch(owner="a", lease_seconds=60, limit=4)
    assert [j.id for j in first] == ids[:4]
    assert all(j.state == JobState.PROCESSING and j.lease_owner == "a" for j in first)
    claimed = [j.id for j in first]
    lock = threading.Lock()

    def worker(name: str) -> None:
        while batch := jobs.claim_batch(owner=name, lease_seconds=60, limit=3):
            with lock:
                claimed.extend(j.id for j in batch)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == ids  # every job exactly once
    assert jobs.claim_batch(owner="a", lease_seconds=60, limit=8) == []


@pytest.fixture
def pipeline_parts(tmp_path):
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path)}})
    jobs = Jobs(make_engine(settings.database_url))
    spool = Spool(tmp_path / "spool")
    classifier = Classifier.demo(architecture=data.TINY_ARCH, device="cpu")
    pipeline = Pipeline(settings=settings, jobs=jobs, spool=spool, classifier=classifier,
                        metrics=Metrics())  # fmt: skip
    ctx = StoreContext(spool=spool, jobs=jobs, metrics=Metrics(), salt="s")

    def receive(path) -> None:
        status, reason = store_bytes(ctx, path.read_bytes(), calling="TEST")
        assert status == 0, reason

    return jobs, spool, pipeline, receive


def test_a_batch_gives_the_results_of_single_images(tmp_path, pipeline_parts):
    jobs, spool, pipeline, receive = pipeline_parts
    sources = [data.testdata(data.RG3_UNCR), data.cat_dx(), data.testdata(data.RG1_J2KI)]
    for i, source in enumerate(sources):
        receive(data.copy_with_new_uids(source, tmp_path / f"batch{i}.dcm"))
    receive(data.copy_with_new_uids(data.ct_small(), tmp_path / "ct.dcm"))  # skipped
    broken = data.copy_with_new_uids(sources[0], tmp_path / "broken.dcm")
    receive(broken)
    batch = jobs.claim_batch(owner="t", lease_seconds=60, limit=8)
    assert len(batch) == 5
    spool.path(batch[-1].spool_path).write_bytes(b"\0" * 200)  # unreadable after receipt
    states = pipeline.process_batch(batch)
    assert states == [JobState.CLASSIFIED] * 3 + [JobState.SKIPPED, JobState.FAILED]
    batched = {j.id: j.probability for j in batch[:3]}
    for i, source in enumerate(sources):  # the same images again, one at a time
        receive(data.copy_with_new_uids(source, tmp_path / f"single{i}.dcm"))
    for job_id in batched:
        (single,) = jobs.claim_batch(owner="t", lease_seconds=60, limit=1)
        assert pipeline.process(single) == JobState.CLASSIFIED
        alone = jobs.get_job(single.id).probability
        assert abs(alone - jobs.get_job(job_id).probability) <= MAX_PROBABILITY_DELTA


def test_images_in_hand_together_are_classified_as_busy(tmp_path, pipeline_parts):
    """Two worker threads with an image each: both runs are `busy` (one core each); an image
    alone is not (all cores for it)."""
    jobs, _spool, pipeline, receive = pipeline_parts
    for i in range(3):
        receive(data.copy_with_new_uids(data.cat_dx(), tmp_path / f"busy{i}.dcm"))
    real, prepare = pipeline.classifier, pipeline._prepare
    both_in_hand = threading.Barrier(2, timeout=30)
    seen: list[bool] = []

    def prepare_together(job):
        prepared = prepare(job)
        if len(seen) < 2:
            both_in_hand.wait()  # the two threads' images are both in hand
        return prepared

    class Recording:
        card = real.card

        def predict_batch(self, images, *, busy=False):
            seen.append(busy)
            return real.predict_batch(images, busy=busy)

    pipeline.classifier, pipeline._prepare = Recording(), prepare_together
    first, second, third = (jobs.claim_batch(owner="t", lease_seconds=60, limit=1)[0]
                            for _ in range(3))  # fmt: skip
    threads = [threading.Thread(target=pipeline.process, args=(job,)) for job in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True, True]
    assert pipeline.process(third) == JobState.CLASSIFIED
    assert seen == [True, True, False]
    assert all(jobs.get_job(j.id).state == JobState.CLASSIFIED for j in (first, second))
