"""Retrying a waiting study report now: `Jobs.retry_study_report_now` on SQLite and a real
PostgreSQL (two "nodes", each its own engine), `POST /api/studies/{uid}/report/retry` on the real
app, and a report really deferred by a write failure (below `min_free_mb`) that the retry makes
be built at the next worker step."""

from __future__ import annotations

from datetime import UTC

import pytest
from fastapi.testclient import TestClient

from dicomnode.audit import Audit
from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.ingest.admission import StoreContext, store_bytes
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.store.db import create_db_engine, make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.spool import Spool
from dicomnode.store.tables import JobState, ResultKind, utcnow
from dicomnode.work.pipeline import Pipeline
from dicomnode.work.worker import JobWorker
from tests.support import data
from tests.support.api_client import TOKEN, api_client
from tests.support.jobs import claim
from tests.support.peers import wait_until

STUDY = "1.2.826.0.1.3680043.8.498.77"


def _item(n: int) -> Received:
    return Received(
        sop_instance_uid=f"{STUDY}.{n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid=STUDY, series_instance_uid=STUDY + ".1", modality="CR",
        body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="p", study={},
    )  # fmt: skip


def _classified_study(jobs: Jobs) -> None:
    """A stable study with one classified image: due for its first report."""
    jobs.enqueue(_item(1))
    job = claim(jobs, owner="w", lease_seconds=60)
    assert job is not None and job.id is not None
    assert jobs.finish(job.id, state=JobState.CLASSIFIED, owner="w", probability=0.9,
                       outcome="positive")  # fmt: skip


def _waiting(jobs: Jobs, *, owner: str = "a", retry_after: float = 3600) -> None:
    """The study's report claimed, then released after a failed build, as the worker does on
    `ReportDeferred`."""
    assert jobs.claim_study_report(owner=owner, lease_seconds=60, stable_seconds=0) == (STUDY, 1)
    jobs.release_study_report(STUDY, owner=owner, retry_after=retry_after)


def _two_nodes(url: str) -> tuple[Jobs, Jobs]:
    make_engine(url).dispose()  # creates the schema
    return Jobs(create_db_engine(url)), Jobs(create_db_engine(url))


# --- Jobs ---------------------------------------------------------------------------------------


def test_a_waiting_report_is_made_due_and_claimed_at_once(database_url):
    a, b = _two_nodes(database_url)
    _classified_study(a)
    _waiting(a)
    assert b.claim_study_report(owner="b", lease_seconds=60, stable_seconds=0) is None

    assert b.retry_study_report_now(STUDY)
    study = a.study(STUDY)
    assert study is not None
    assert study.report_owner is None and study.report_lease_expires_at is None
    assert study.report_version == 0  # nothing recorded: only the wait ended
    assert a.claim_study_report(owner="a", lease_seconds=60, stable_seconds=0) == (STUDY, 1)
    assert not b.retry_study_report_now(STUDY)  # claimed now: not waiting any more


def test_a_live_claim_is_never_touched(database_url):
    a, b = _two_nodes(database_url)
    _classified_study(a)
    assert a.claim_study_report(owner="a", lease_seconds=600, stable_seconds=0) == (STUDY, 1)
    before = a.study(STUDY)
    assert before is not None and before.report_lease_expires_at is not None

    assert not b.retry_study_report_now(STUDY)
    after = b.study(STUDY)
    assert after is not None and after.report_owner == "a"
    assert after.report_lease_expires_at == before.report_lease_expires_at
    assert b.claim_study_report(owner="b", lease_seconds=60, stable_seconds=0) is None
    assert a.record_report(study_instance_uid=STUDY, version=1, job_count=1, outcome="positive",
                           max_probability=0.9, owner="a")  # fmt: skip


def test_unknown_study_and_nothing_waiting_change_nothing(database_url):
    a, _b = _two_nodes(database_url)
    assert not a.retry_study_report_now("1.2.3.4.404")
    _classified_study(a)
    assert not a.retry_study_report_now(STUDY)  # due, never claimed: no wait to end
    _waiting(a, retry_after=0)  # released without a wait
    assert not a.retry_study_report_now(STUDY)
    _waiting(a, retry_after=0.05)  # a wait that is over already
    at = a.study(STUDY).report_lease_expires_at
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    wait_until(lambda: utcnow() > at, timeout=10, what="the short wait to pass")
    assert not a.retry_study_report_now(STUDY)
    assert a.study(STUDY).report_lease_expires_at is not None  # left as it was


# --- API ----------------------------------------------------------------------------------------


@pytest.fixture
def api(tmp_path):
    with api_client(tmp_path) as parts:
        yield parts


def _updates(audit: Audit) -> list:
    return [e for e in audit.query(event="DICOMInstancesAccessed") if e.action == "U"]


def test_api_retry_of_a_waiting_report(api):
    client, jobs, audit = api
    _classified_study(jobs)
    assert client.get(f"/api/studies/{STUDY}").json()["report_retry_at"] is None  # due
    _waiting(jobs)
    shown = client.get(f"/api/studies/{STUDY}").json()["report_retry_at"]
    at = jobs.study(STUDY).report_lease_expires_at
    assert shown is not None and shown == at.replace(tzinfo=at.tzinfo or UTC).isoformat()

    done = client.post(f"/api/studies/{STUDY}/report/retry")
    assert done.status_code == 200, done.text
    assert done.json() == {"study_instance_uid": STUDY, "report": "due"}
    assert client.get(f"/api/studies/{STUDY}").json()["report_retry_at"] is None
    [event] = _updates(audit)
    assert event.detail == "waiting study report retried now" and event.object == "study-report"
    assert event.study == audit.hash(STUDY) and STUDY not in event.study
    assert event.actor.startswith("api:")
    assert jobs.claim_study_report(owner="a", lease_seconds=60, stable_seconds=0) == (STUDY, 1)


def test_api_refusals(api):
    client, jobs, audit = api
    assert client.post("/api/studies/1.2.3.4.404/report/retry").status_code == 404
    _classified_study(jobs)
    nothing = client.post(f"/api/studies/{STUDY}/report/retry")
    assert nothing.status_code == 409 and nothing.json()["detail"] == "study has no report waiting"
    assert jobs.claim_study_report(owner="a", lease_seconds=600, stable_seconds=0) == (STUDY, 1)
    busy = client.post(f"/api/studies/{STUDY}/report/retry")
    assert busy.status_code == 409
    assert busy.json()["detail"] == "study report is being built now"
    assert jobs.study(STUDY).report_owner == "a"
    assert client.get(f"/api/studies/{STUDY}").json()["report_retry_at"] is None  # claimed
    assert _updates(audit) == []  # refusals change nothing
    anonymous = TestClient(client.app)
    assert anonymous.post(f"/api/studies/{STUDY}/report/retry").status_code == 401


# --- a report really deferred by a write failure --------------------------------------------------


def test_a_report_deferred_below_min_free_mb_is_built_at_the_next_step_after_retry(tmp_path):
    settings = Settings.model_validate({
        "api": {"token": TOKEN},
        "node": {"data_dir": str(tmp_path), "resource_retry_initial_seconds": 3600},
    })  # fmt: skip
    jobs = Jobs(make_engine(settings.database_url))
    spool = Spool(tmp_path / "spool")
    classifier = Classifier.demo(architecture=data.TINY_ARCH, device="cpu")
    pipeline = Pipeline(settings=settings, jobs=jobs, spool=spool, classifier=classifier,
                        metrics=Metrics())  # fmt: skip
    worker = JobWorker(jobs=jobs, pipeline=pipeline, owner="n1", stable_seconds=0)
    store = StoreContext(spool=spool, jobs=jobs, metrics=Metrics(), salt="s")
    source = data.copy_with_new_uids(data.testdata(data.RG3_UNCR), tmp_path / "in.dcm")
    assert store_bytes(store, source.read_bytes(), calling="TEST")[0] == 0
    study_uid = jobs.list_jobs()[0].study_instance_uid
    ctx = ApiContext(settings=settings, jobs=jobs, metrics=Metrics(), card=lambda: None,
                     readiness=dict)  # fmt: skip
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {TOKEN}"})

    # The image is classified (its SC written); it is the first thing the worker claims.
    claimed = claim(jobs, owner="n1", lease_seconds=60)
    assert claimed is not None and pipeline.process(claimed) == JobState.CLASSIFIED
    # Then free space falls below the reserve: the report cannot be written (SpoolFull).
    spool.min_free_bytes = 1 << 62
    worker.step()
    study = jobs.study(study_uid)
    assert study.report_version == 0 and study.report_owner is None
    deferred = pipeline.metrics.registry.get_sample_value(
        "dicomnode_jobs_deferred_total", {"kind": "report", "cause": "min_free_mb"}
    )
    assert deferred == 1
    assert client.get(f"/api/studies/{study_uid}").json()["report_retry_at"] is not None

    spool.min_free_bytes = 0  # the admin frees space: the report still waits its hour
    assert worker.step() is False and jobs.study(study_uid).report_version == 0
    assert client.post(f"/api/studies/{study_uid}/report/retry").status_code == 200
    assert worker.step() is True
    study = jobs.study(study_uid)
    assert study.report_version == 1 and study.report_owner is None
    assert [r.version for r in jobs.results_for_study(study_uid, ResultKind.SR)] == [1]
    assert client.get(f"/api/studies/{study_uid}").json()["report_retry_at"] is None
