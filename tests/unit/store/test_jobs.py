import threading
from datetime import timedelta

from sqlalchemy import update

from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.tables import DeliveryState, Job, JobState, ResultKind, utcnow
from tests.support.jobs import claim, due_deliveries, studies_to_report


def _jobs(tmp_path):
    return Jobs(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))


def _item(sop, study="1.2.3"):
    return Received(
        sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid=study, series_instance_uid=study + ".1", modality="CR",
        body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="p",
        study={"patient_name": "X", "study_description": "Hand"},
    )  # fmt: skip


def test_duplicate_sop_instance_gives_one_job(tmp_path):
    jobs = _jobs(tmp_path)
    first = jobs.enqueue(_item("1.2.3.4"))
    again = jobs.enqueue(_item("1.2.3.4"))
    assert first[1] is True and again == (first[0], False)
    assert len(jobs.list_jobs()) == 1
    assert jobs.study("1.2.3").study_description == "Hand"


def test_concurrent_claims_never_hand_out_a_job_twice(tmp_path):
    jobs = _jobs(tmp_path)
    for i in range(60):
        jobs.enqueue(_item(f"1.2.3.{i}"))
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name):
        while (job := claim(jobs, owner=name, lease_seconds=60)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 60


def test_expired_lease_returns_the_job_and_release_requeues(tmp_path):
    jobs = _jobs(tmp_path)
    jobs.enqueue(_item("1.2.3.4"))
    job = claim(jobs, owner="dead", lease_seconds=60)
    assert claim(jobs, owner="other", lease_seconds=60) is None
    with jobs.session() as s:
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    again = claim(jobs, owner="other", lease_seconds=60)
    assert again.id == job.id and again.attempts == 2 and again.lease_owner == "other"
    assert jobs.release_owned("other") == 1
    assert jobs.get_job(job.id).state == JobState.QUEUED


def test_study_is_reported_only_when_quiet_and_finished(tmp_path):
    jobs = _jobs(tmp_path)
    jobs.enqueue(_item("1.2.3.4"))
    jobs.enqueue(_item("1.2.3.5"))
    assert studies_to_report(jobs, stable_seconds=0) == []  # nothing classified yet
    a = claim(jobs, owner="n", lease_seconds=60)
    jobs.finish(a.id, state=JobState.CLASSIFIED, probability=0.9, outcome="positive")
    assert studies_to_report(jobs, stable_seconds=0) == []  # one image still queued
    b = claim(jobs, owner="n", lease_seconds=60)
    jobs.finish(b.id, state=JobState.SKIPPED, reason="x")
    assert studies_to_report(jobs, stable_seconds=3600) == []  # not quiet long enough
    assert studies_to_report(jobs, stable_seconds=0) == ["1.2.3"]
    jobs.record_report(study_instance_uid="1.2.3", version=1, job_count=1, outcome="positive",
                       max_probability=0.9)  # fmt: skip
    assert studies_to_report(jobs, stable_seconds=0) == []
    jobs.enqueue(_item("1.2.3.6"))  # a late image: a new version becomes due once classified
    c = claim(jobs, owner="n", lease_seconds=60)
    jobs.finish(c.id, state=JobState.CLASSIFIED, probability=0.1, outcome="negative")
    assert studies_to_report(jobs, stable_seconds=0) == ["1.2.3"]


def test_results_are_idempotent_and_the_outbox_backs_off(tmp_path):
    jobs = _jobs(tmp_path)
    r1 = jobs.add_result(kind=ResultKind.SR, sop_instance_uid="9.9", study_instance_uid="1.2.3",
                         path="out/x", destinations=["a", "b"])  # fmt: skip
    r2 = jobs.add_result(kind=ResultKind.SR, sop_instance_uid="9.9", study_instance_uid="1.2.3",
                         path="out/x", destinations=["a", "b"])  # fmt: skip
    assert r1.id == r2.id
    due = due_deliveries(jobs)
    assert sorted(d.destination for d, _ in due) == ["a", "b"]
    a = next(d for d, _ in due if d.destination == "a")
    b = next(d for d, _ in due if d.destination == "b")
    jobs.delivery_failed(a.id, status=0xA700, error="full", retry_at=utcnow() + timedelta(hours=1))
    jobs.delivery_succeeded(b.id, status=0)
    assert due_deliveries(jobs) == []
    [da, db] = jobs.deliveries_for([r1.id])
    assert da.state == DeliveryState.PENDING and da.attempts == 1 and da.last_status == 0xA700
    assert db.state == DeliveryState.DELIVERED
    jobs.delivery_failed(a.id, status=None, error="gone", retry_at=None)
    assert jobs.deliveries_for([r1.id])[0].state == DeliveryState.FAILED


def test_only_the_acknowledging_commit_is_fsynced_on_sqlite(tmp_path):
    """The job row of a received image is committed with synchronous=FULL (it is on disk
    before 0x0000 is sent); the worker's state changes use NORMAL (no fsync per change)."""
    from sqlalchemy import event

    jobs = _jobs(tmp_path)
    levels = []  # PRAGMA synchronous as each transaction commits: 2 = FULL, 1 = NORMAL
    event.listen(
        jobs.engine, "commit",
        lambda conn: levels.append(conn.exec_driver_sql("PRAGMA synchronous").scalar()),
    )  # fmt: skip
    jobs.enqueue(_item("1.2.3.4"))
    assert levels == [2]
    job = claim(jobs, owner="w", lease_seconds=60)
    assert job is not None
    jobs.finish(job.id, state=JobState.CLASSIFIED, owner="w")
    assert levels[1:] and set(levels[1:]) == {1}
    jobs.enqueue(_item("1.2.3.5"))  # a later acknowledged image is FULL again
    assert levels[-1] == 2


def test_a_deferred_job_waits_until_its_retry_time_and_keeps_its_reason(tmp_path):
    jobs = _jobs(tmp_path)
    jobs.enqueue(_item("1.2.3.4"))
    job = claim(jobs, owner="a", lease_seconds=60)
    assert not jobs.defer(job.id, owner="b", reason="waiting", retry_at=utcnow())  # not b's
    later = utcnow() + timedelta(seconds=3600)
    assert jobs.defer(job.id, owner="a", reason="waiting: disk full (ENOSPC)", retry_at=later)
    waiting = jobs.get_job(job.id)
    assert waiting.state == JobState.QUEUED and waiting.reason == "waiting: disk full (ENOSPC)"
    assert claim(jobs, owner="a", lease_seconds=60) is None  # not before its time
    assert jobs.queue_depth() == 1
    with jobs.session() as s:
        s.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        s.commit()
    again = claim(jobs, owner="a", lease_seconds=60)
    assert again.id == job.id and again.attempts == 2
    assert jobs.finish(job.id, state=JobState.CLASSIFIED, owner="a")
    assert jobs.get_job(job.id).reason is None
