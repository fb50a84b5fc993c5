"""Reads of patient identifiers through the API and the worklist page are audited: the real app
(FastAPI TestClient), a real SQLite database filled through `Jobs`, the real audit trail.

One event per view (a worklist page is one Query event with the row count), hashed studies
only, and a repeated read of the same thing by the same client within the repeat window is
not recorded again unless it shows something new.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pydicom
from fastapi.testclient import TestClient
from starlette.requests import Request

from dicomnode.audit import Audit, AuditEvent
from dicomnode.config import Settings
from dicomnode.http.access import AccessAudit
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.metrics import Metrics
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.spool import Spool
from dicomnode.store.tables import JobState, ResultKind
from tests.support.jobs import claim
from tests.support.smallcr import small_cr

TOKEN = "access-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SALT = "access-salt"
ROOT = "1.2.826.0.1.3680043.8.498.5150."
PATIENT = {"patient_name": "CANARY^ACCESS", "patient_id": "PID-ACCESS-1",
           "accession_number": "ACC-ACCESS-2"}  # fmt: skip


class Node:
    """A database, spool and audit trail, filled the way the node fills them."""

    def __init__(self, tmp_path: Any, **api: Any) -> None:
        self.engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        self.jobs = Jobs(self.engine)
        self.audit = Audit(self.engine, salt=SALT)
        self.spool = Spool(tmp_path / "spool")
        self.tmp_path = tmp_path
        self.n = 0
        settings = Settings.model_validate(
            {"api": {"token": TOKEN, **api}, "node": {"log_salt": SALT}}
        )
        ctx = ApiContext(settings=settings, jobs=self.jobs, metrics=Metrics(), card=lambda: None,
                         readiness=dict, spool=self.spool, audit=self.audit)  # fmt: skip
        self.client = TestClient(create_app(ctx), headers=AUTH)

    def image(self, study: str, p: float = 0.9) -> tuple[int, str]:
        """A classified image of `study` with its SC result stored in the spool."""
        self.n += 1
        sop = f"{study}.{self.n}"
        job_id, _ = self.jobs.enqueue(
            Received(
                sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                study_instance_uid=study, series_instance_uid=f"{study}.0", modality="CR",
                body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="x",
                study={**PATIENT, "study_date": "20240105", "study_description": "HAND"},
            )
        )  # fmt: skip
        claim(self.jobs, owner="t", lease_seconds=60)
        self.jobs.finish(job_id, state=JobState.CLASSIFIED, probability=p, outcome="positive")
        sc_uid = f"{sop}.99"
        relative = self.spool.relative_path(sc_uid, kind="out")
        self.spool.write_bytes(relative, _sc_bytes(self.tmp_path / f"sc{self.n}.dcm", study))
        self.jobs.add_result(kind=ResultKind.SC, sop_instance_uid=sc_uid,
                             study_instance_uid=study, path=relative, destinations=[],
                             job_id=job_id)  # fmt: skip
        return job_id, sc_uid

    def events(self, event: str | None = None) -> list[AuditEvent]:
        return self.audit.query(event=event, limit=1000, newest_first=False)


def _sc_bytes(path: Any, study: str) -> bytes:
    """A small 8-bit grayscale image (a real CR's pixels) as the SC thumbnails render."""
    ds = pydicom.dcmread(small_cr(path, study_uid=study))
    pixels = ds.pixel_array.astype(np.float32)
    pixels = (255 * (pixels - pixels.min()) / max(1.0, float(np.ptp(pixels)))).astype(np.uint8)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _no_identifiers(node: Node, *raw: str) -> None:
    text = " ".join(str(v) for e in node.events() for v in e.model_dump().values())
    for value in (*raw, *PATIENT.values()):
        assert value not in text, f"{value!r} in the audit trail"


def test_a_study_read_is_one_hashed_event_and_a_repeat_is_not_recorded_again(tmp_path):
    node = Node(tmp_path)
    study = ROOT + "1"
    node.image(study)
    node.image(study)
    body = node.client.get(f"/api/studies/{study}").json()
    assert body["patient"]["name"] == PATIENT["patient_name"]  # identifiers went out
    [event] = node.events("DICOMInstancesAccessed")
    assert (event.action, event.outcome, event.count) == ("R", 0, 2)
    assert event.study == node.audit.hash(study) and event.object == f"study:{event.study}"
    assert event.actor.startswith("api:") and event.peer.endswith("(bearer token)")
    assert event.peer.startswith("testclient:")  # the client's address
    assert event.detail == "GET /api/studies/{uid}; patient identifiers shown"

    node.client.get(f"/api/studies/{study}")  # a script polling: the same answer
    assert len(node.events("DICOMInstancesAccessed")) == 1
    node.image(study)  # a new image: the answer names a new instance
    node.client.get(f"/api/studies/{study}")
    assert [e.count for e in node.events("DICOMInstancesAccessed")] == [2, 3]
    assert node.client.get(f"/api/studies/{ROOT}404").status_code == 404
    assert len(node.events("DICOMInstancesAccessed")) == 2  # nothing disclosed, nothing read
    _no_identifiers(node, study)


def test_a_worklist_view_is_one_query_event_with_the_row_count(tmp_path):
    node = Node(tmp_path)
    studies = [ROOT + f"2{i}" for i in range(3)]
    for study in studies:
        node.image(study)
    body = node.client.get("/api/worklist", params={"outcome": "positive"}).json()
    assert len(body["studies"]) == 3 and body["studies"][0]["patient"]["name"]
    [api_view] = node.events("Query")
    assert (api_view.action, api_view.count, api_view.study) == ("E", 3, "")
    assert api_view.detail == (
        "GET /api/worklist: 3 rows; outcome=positive limit=50 offset=0 patient identifiers shown"
    )

    # The page, signed in with the session cookie, and its periodic refresh of the rows.
    login = node.client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303
    page = node.client.get("/", headers={"Authorization": ""})
    assert page.status_code == 200 and PATIENT["patient_name"] in page.text
    for _ in range(3):
        assert node.client.get("/", params={"fragment": "rows"},
                               headers={"Authorization": ""}).status_code == 200  # fmt: skip
    views = node.events("Query")
    assert len(views) == 2, [v.detail for v in views]  # one per view, none per row or refresh
    assert views[1].detail.startswith("worklist page: 3 rows; limit=50 offset=0")
    assert views[1].peer.endswith("(session cookie)")
    node.image(ROOT + "29")  # a new study appears in the refreshed rows: that is a new read
    node.client.get("/", params={"fragment": "rows"}, headers={"Authorization": ""})
    assert [v.count for v in node.events("Query")] == [3, 3, 4]
    assert node.events("DICOMInstancesAccessed") == []  # rows are counted, not read one by one
    _no_identifiers(node, *studies)


def test_job_lists_job_reads_and_thumbnails_are_audited(tmp_path):
    node = Node(tmp_path, show_patient_identifiers=False)
    study = ROOT + "3"
    job_id, sc_uid = node.image(study)
    node.image(ROOT + "4")
    assert len(node.client.get("/api/jobs").json()["jobs"]) == 2
    assert node.client.get("/api/jobs", params={"study_instance_uid": study}).status_code == 200
    listed, filtered = node.events("Query")
    assert (listed.count, listed.study, listed.detail) == (
        2, "", "GET /api/jobs: 2 rows; limit=100 offset=0")  # fmt: skip
    assert (filtered.count, filtered.study) == (1, node.audit.hash(study))
    assert filtered.detail == "GET /api/jobs: 1 rows; study filter limit=100 offset=0"

    node.client.get(f"/api/jobs/{job_id}")
    png = node.client.get(f"/api/results/{sc_uid}/thumbnail.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    node.client.get(f"/api/results/{sc_uid}/thumbnail.png")  # the browser again: not again
    assert node.client.get(f"/api/results/{ROOT}404/thumbnail.png").status_code == 404
    job, thumbnail = node.events("DICOMInstancesAccessed")
    assert (job.object, job.study, job.detail) == (
        f"job:{job_id}", node.audit.hash(study), "GET /api/jobs/{id}")  # fmt: skip
    assert thumbnail.object == f"instance:{node.audit.hash(sc_uid)}"
    assert (thumbnail.study, thumbnail.detail) == (node.audit.hash(study), "SC thumbnail")
    _no_identifiers(node, study, sc_uid)


def test_things_without_identifiers_are_not_recorded_as_reads(tmp_path):
    node = Node(tmp_path)
    node.image(ROOT + "5")
    for path in ("/healthz", "/readyz", "/metrics", "/api/model", "/openapi.json"):
        node.client.get(path)
    node.client.get("/api/audit")  # hashes only; recorded as Audit Log Used, not as a read
    assert [e.event for e in node.events()] == ["AuditLogUsed"]


def _request(host: str, *, authorization: str = "") -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers,
                    "client": (host, 40000), "query_string": b""})  # fmt: skip


def test_the_repeat_window_is_per_client_and_ends(tmp_path):
    audit = Audit(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"), salt=SALT)
    now = [1000.0]
    access = AccessAudit(audit, salt=SALT, token=TOKEN, repeat_seconds=300,
                         clock=lambda: now[0])  # fmt: skip
    bearer = f"Bearer {TOKEN}"

    def read(host: str, **kwargs: str) -> None:
        access.read(_request(host, **kwargs), study_uid=ROOT + "6", what="test", key=("s",))

    read("10.0.0.1", authorization=bearer)
    read("10.0.0.1", authorization=bearer)
    read("10.0.0.2", authorization=bearer)  # another workstation: its own read
    read("10.0.0.1", authorization="Bearer wrong")  # another credential: its own
    now[0] += 299
    read("10.0.0.1", authorization=bearer)
    assert len(audit.query()) == 3
    now[0] += 1
    read("10.0.0.1", authorization=bearer)  # 300 s after the last recorded read
    events = audit.query(newest_first=False)
    assert len(events) == 4
    assert [e.peer for e in events] == [
        "10.0.0.1:40000 (bearer token)", "10.0.0.2:40000 (bearer token)",
        "10.0.0.1:40000 (wrong token)", "10.0.0.1:40000 (bearer token)",
    ]  # fmt: skip
    assert events[0].actor == events[2].actor != events[1].actor
    open_access = AccessAudit(audit, salt=SALT, token="")
    open_access.read(_request("127.0.0.1"), study_uid=None, what="x", key=("t",))
    assert audit.query(limit=1)[0].peer == "127.0.0.1:40000 (no token configured)"
