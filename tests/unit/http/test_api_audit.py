"""GET /api/audit and the audited API actions, on the real app with a real SQLite database."""

from __future__ import annotations

from fastapi.testclient import TestClient

from dicomnode.audit import Audit, AuditAction, AuditEventID
from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.metrics import Metrics
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.tables import JobState
from tests.support.jobs import claim

STUDY = "1.2.826.0.1.3680043.8.498.31"
TOKEN = "t0ken"


def _client(tmp_path) -> tuple[TestClient, Jobs, Audit]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    jobs, audit = Jobs(engine), Audit(engine, salt="salt")
    settings = Settings.model_validate({"api": {"token": TOKEN}, "node": {"log_salt": "salt"}})
    ctx = ApiContext(
        settings=settings,
        jobs=jobs,
        metrics=Metrics(),
        card=lambda: None,
        readiness=dict,
        audit=audit,
    )
    client = TestClient(create_app(ctx), headers={"Authorization": f"Bearer {TOKEN}"})
    return client, jobs, audit


def test_audit_needs_the_token_and_a_refused_token_is_audited(tmp_path):
    client, _, audit = _client(tmp_path)
    refused = client.get(f"/api/studies/{STUDY}", headers={"Authorization": "Bearer nope"})
    assert refused.status_code == 401
    assert client.get("/api/audit", headers={"Authorization": ""}).status_code == 401
    [second, first] = audit.query(event="UserAuthentication")
    assert first.outcome == 4 and first.actor.startswith("api:")
    assert first.detail == "bearer token refused: GET /api/studies/uid:" + first.detail[-16:]
    assert STUDY not in first.detail and second.detail.endswith("/api/audit")


def test_filters_pagination_and_the_study_filter_takes_a_raw_uid(tmp_path):
    client, _, audit = _client(tmp_path)
    for i in range(7):
        audit.record(
            event=AuditEventID.INSTANCES_TRANSFERRED,
            action=AuditAction.CREATE,
            actor="MODALITY",
            study_uid=STUDY if i < 3 else None,
        )
    page = client.get("/api/audit", params={"limit": 5}).json()
    assert len(page["events"]) == 5 and page["limit"] == 5
    rest = client.get("/api/audit", params={"limit": 5, "offset": 5}).json()["events"]
    assert {e["id"] for e in page["events"]} | {e["id"] for e in rest} >= set(range(1, 8))
    by_study = client.get("/api/audit", params={"study": STUDY}).json()["events"]
    assert len(by_study) == 3 and all(e["study"] == audit.hash(STUDY) for e in by_study)
    assert STUDY not in client.get("/api/audit", params={"limit": 100}).text
    used = client.get("/api/audit", params={"event": "AuditLogUsed"}).json()["events"]
    assert used and used[0]["action"] == "R"  # reading the trail is itself audited
    bad = client.get("/api/audit", params={"since": "yesterday"})
    assert bad.status_code == 422


def test_retrying_a_failed_job_is_audited(tmp_path):
    client, jobs, audit = _client(tmp_path)
    job_id, _ = jobs.enqueue(
        Received(
            STUDY + ".1", "1.2.840.10008.5.1.4.1.1.1", STUDY, "", "CR", "", "", "X", "in/x.dcm", {}
        )
    )
    claim(jobs, owner="t", lease_seconds=60)
    jobs.finish(job_id, state=JobState.FAILED, reason="pixel data cannot be decoded")
    assert client.post(f"/api/jobs/{job_id}/retry").status_code == 200
    [event] = audit.query(event="DICOMInstancesAccessed")
    assert event.action == "U" and event.object == f"job:{job_id}"
    assert event.study == audit.hash(STUDY) and event.actor.startswith("api:")
