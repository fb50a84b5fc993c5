"""POST /api/jobs/{id}/retry for each job state, on the real app with a real SQLite database:
a job waiting for a resource (disk full) is made due now, keeping its attempts."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.tables import JobState, utcnow
from tests.support.api_client import api_client
from tests.support.jobs import claim

STUDY = "1.2.826.0.1.3680043.8.498.32"
WAITING = "waiting: results cannot be written (ENOSPC); attempt 1, next in 3600 s"


@pytest.fixture
def api(tmp_path):
    with api_client(tmp_path) as parts:
        yield parts


def _job(jobs: Jobs, n: int) -> int:
    sop = f"{STUDY}.{n}"
    received = Received(sop, "1.2.840.10008.5.1.4.1.1.1", STUDY, "", "CR", "", "", "X",
                        f"in/{n}.dcm", {})  # fmt: skip
    job_id, _ = jobs.enqueue(received)
    return job_id


def _claimed(jobs: Jobs, n: int) -> int:
    """A job in state `processing` (claimed by owner "t")."""
    job_id = _job(jobs, n)
    claimed = claim(jobs, owner="t", lease_seconds=600)
    assert claimed is not None and claimed.id == job_id
    return job_id


def _waiting(jobs: Jobs, n: int) -> int:
    """A job deferred for an hour, as the pipeline defers one when the disk is full."""
    job_id = _claimed(jobs, n)
    assert jobs.defer(job_id, owner="t", reason=WAITING, retry_at=utcnow() + timedelta(hours=1))
    return job_id


def test_retry_of_a_waiting_job_makes_it_due_now_and_keeps_its_attempts(api):
    client, jobs, audit = api
    job_id = _waiting(jobs, 1)
    before = client.get(f"/api/jobs/{job_id}").json()
    assert before["state"] == "queued" and before["reason"] == WAITING
    assert before["retry_at"] is not None and before["attempts"] == 1
    assert claim(jobs, owner="t", lease_seconds=600) is None  # not due for an hour

    done = client.post(f"/api/jobs/{job_id}/retry")
    assert done.status_code == 200 and done.json() == {"id": job_id, "state": "queued"}
    after = client.get(f"/api/jobs/{job_id}").json()
    assert after["state"] == "queued" and after["retry_at"] is None and after["reason"] is None
    assert after["attempts"] == 1
    # (reading the job is audited too, as a read: action R)
    [event] = [e for e in audit.query(event="DICOMInstancesAccessed") if e.action == "U"]
    assert event.detail == "waiting job retried now" and event.object == f"job:{job_id}"
    assert event.action == "U" and event.actor.startswith("api:")

    # Due at once: the next claim takes it, counting on from its attempts.
    claimed = claim(jobs, owner="t", lease_seconds=600)
    assert claimed is not None and claimed.id == job_id and claimed.attempts == 2
    # Now processing: a second "retry now" is the existing requeue of a stuck job.
    assert client.post(f"/api/jobs/{job_id}/retry").status_code == 200


def test_each_state_answers_as_before(api):
    client, jobs, audit = api
    failed = _claimed(jobs, 1)
    jobs.finish(failed, state=JobState.FAILED, reason="pixel data cannot be decoded")
    classified = _claimed(jobs, 2)
    jobs.finish(classified, state=JobState.CLASSIFIED, probability=0.2, outcome="negative")
    skipped = _claimed(jobs, 3)
    jobs.finish(skipped, state=JobState.SKIPPED, reason="modality CT is not classified")
    processing = _claimed(jobs, 4)  # stuck: requeued, as before
    queued = _job(jobs, 5)  # queued and due: nothing to retry

    answers = {
        name: client.post(f"/api/jobs/{job_id}/retry").status_code
        for name, job_id in [("failed", failed), ("classified", classified),
                             ("skipped", skipped), ("processing", processing),
                             ("queued", queued), ("missing", 99999)]
    }  # fmt: skip
    assert answers == {"failed": 200, "classified": 409, "skipped": 409, "processing": 200,
                       "queued": 409, "missing": 404}  # fmt: skip
    conflict = client.post(f"/api/jobs/{classified}/retry").json()["detail"]
    assert conflict == "job is classified, not failed or waiting"
    assert jobs.get_job(classified).state == JobState.CLASSIFIED  # untouched
    details = sorted(e.detail for e in audit.query(event="DICOMInstancesAccessed"))
    assert details == ["failed job requeued", "failed job requeued"]  # refusals change nothing
