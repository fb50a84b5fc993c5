"""HTTP analysis is audited like a DICOM import: the real app (FastAPI TestClient), a real
SQLite database and audit trail, the tiny demo model, small real radiographs whose patient
attributes and file names are canaries.

An upload is an Import event per study (hashed), a refused one an Import with outcome 8 and the
refusal's code, a stored result read back a DICOM Instances Accessed read, a downloaded result
file an Export; nothing in the trail holds a raw UID, a patient attribute or a file name.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from dicomnode.audit import Audit, AuditEvent
from dicomnode.config import Settings
from dicomnode.http.app import ApiContext, create_app
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from tests.support.data import TINY_ARCH, ct_small, new_uid
from tests.support.smallcr import small_cr

TOKEN = "analyze-audit-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CANARY = {"PatientName": "CANARY^UPLOAD", "PatientID": "CANARYID77", "AccessionNumber": "CA77X"}
#: An uploaded file's name (it could hold PHI): never in the trail.
FILE_NAME = "CANARY-FILENAME-Doe-1970.dcm"


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.demo(architecture=TINY_ARCH, device="cpu")


class Node:
    def __init__(self, tmp_path: Path, classifier: Classifier) -> None:
        data = tmp_path / "var"
        self.engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        self.audit = Audit(self.engine, salt="upload-salt")
        node = {"data_dir": str(data), "log_salt": "upload-salt"}
        settings = Settings.model_validate({"node": node, "api": {"token": TOKEN}})
        ctx = ApiContext(settings=settings, jobs=Jobs(self.engine), metrics=Metrics(),
                         card=lambda: classifier.card, readiness=dict, spool=Spool(data / "spool"),
                         classifier=classifier, audit=self.audit)  # fmt: skip
        self.client = TestClient(create_app(ctx), headers=AUTH)

    def post(self, payload: bytes, path: str = "/api/analyze", **kwargs: Any) -> Any:
        files = {"file": (FILE_NAME, payload, "application/octet-stream")}
        return self.client.post(path, files=files, **kwargs)

    def events(self) -> list[AuditEvent]:
        return self.audit.query(limit=1000, newest_first=False)

    def assert_no_identifiers(self, *raw: str) -> None:
        text = " ".join(str(v) for e in self.events() for v in e.model_dump().values())
        for value in (*raw, *CANARY.values(), FILE_NAME, "EXPORT/", "README"):
            assert value not in text, f"{value!r} in the audit trail"


@pytest.fixture
def node(tmp_path: Path, classifier: Classifier) -> Iterator[Node]:
    made = Node(tmp_path, classifier)
    yield made
    made.engine.dispose()


def _uids(path: Path) -> tuple[str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


def test_a_dicom_upload_is_one_import_and_its_downloads_are_exports(node, tmp_path):
    study = new_uid("audit upload study")
    source = small_cr(tmp_path / "a.dcm", study_uid=study, **CANARY)
    response = node.post(source.read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    [event] = node.events()
    assert (event.event, event.action, event.outcome, event.count) == ("Import", "C", 0, 1)
    assert event.study == node.audit.hash(study) and event.object == f"upload:{body['id'][:8]}"
    assert event.detail == "HTTP analysis upload (dicom): 1 image classified"
    assert event.actor.startswith("api:") and event.peer.endswith("(bearer token)")

    assert node.client.get(body["urls"]["result"]).status_code == 200
    assert node.client.get(body["urls"]["result"]).status_code == 200  # the page again
    for kind in ("sc", "sr", "overlay", "overlay"):  # the overlay twice (an <img> reloaded)
        assert node.client.get(body["urls"][kind]).status_code == 200
    assert node.client.get(body["urls"]["result"] + "/files/result.json").status_code == 404
    events = node.events()[1:]
    assert [(e.event, e.action, e.detail) for e in events] == [
        ("DICOMInstancesAccessed", "R", "GET /api/analyses/{id}"),
        ("Export", "R", "analysis result downloaded: SC (DICOM)"),
        ("Export", "R", "analysis result downloaded: SR (DICOM)"),
        ("Export", "R", "analysis result downloaded: overlay PNG"),
    ]
    assert {e.study for e in events} == {node.audit.hash(study)}
    assert {e.object for e in events} == {event.object}
    node.assert_no_identifiers(study, *_uids(source), body["id"],
                               body["dicom"]["sc_sop_instance_uid"])  # fmt: skip


def test_a_zip_is_an_import_per_study_and_one_for_entries_not_read(node, tmp_path):
    first, second = new_uid("audit zip 1"), new_uid("audit zip 2")
    a1 = small_cr(tmp_path / "a1.dcm", study_uid=first, **CANARY)
    a2 = small_cr(tmp_path / "a2.dcm", study_uid=first, **CANARY)
    b1 = small_cr(tmp_path / "b1.dcm", study_uid=second, **CANARY)
    ct = pydicom.dcmread(ct_small())
    ct.StudyInstanceUID = first  # a CT in the first study: imported, not classified
    ct.save_as(tmp_path / "ct.dcm")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        entries = {"EXPORT/CANARY^UPLOAD/IM1": a1, "EXPORT/CANARY^UPLOAD/IM2": a2,
                   "EXPORT/CT1": tmp_path / "ct.dcm", "EXPORT/OTHER/IM1": b1}  # fmt: skip
        for name, path in entries.items():
            zf.writestr(name, path.read_bytes())
        zf.writestr("EXPORT/README.TXT", b"exported for CANARY^UPLOAD\n")
    response = node.post(buffer.getvalue(), path="/api/analyze-study")
    assert response.status_code == 200, response.text
    body = response.json()
    imports = node.events()
    assert [(e.event, e.study, e.count, e.outcome, e.detail) for e in imports] == [
        ("Import", node.audit.hash(first), 3, 0,
         "HTTP analysis upload (zip): 3 DICOM files, 2 classified, 1 skipped, 0 failed"),
        ("Import", node.audit.hash(second), 1, 0,
         "HTTP analysis upload (zip): 1 DICOM files, 1 classified, 0 skipped, 0 failed"),
        ("Import", "", 1, 4, "HTTP analysis upload (zip): entries not read: 1 not a DICOM file"),
    ]  # fmt: skip
    assert len({e.object for e in imports}) == 1

    report = node.client.get(body["urls"]["report"])
    assert report.status_code == 200
    sc_of_second = next(i for i in body["images"] if i.get("entry") == "EXPORT/OTHER/IM1")
    assert node.client.get(sc_of_second["urls"]["sc"]).status_code == 200
    exports = [(e.detail, e.study) for e in node.events() if e.event == "Export"]
    assert exports == [
        ("analysis result downloaded: XLSX report", node.audit.hash(first)),
        ("analysis result downloaded: XLSX report", node.audit.hash(second)),
        ("analysis result downloaded: SC (DICOM)", node.audit.hash(second)),
    ]
    node.assert_no_identifiers(first, second, *(_uids(p)[1] for p in (a1, a2, b1)))


def test_refused_uploads_are_audited_with_their_reason_class(node, tmp_path):
    ct_study = str(pydicom.dcmread(ct_small(), stop_before_pixels=True).StudyInstanceUID)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../CANARY^UPLOAD.dcm", b"x")
    answers = [
        node.post(b"%PDF-1.4 a letter about CANARY^UPLOAD\n" * 20),
        node.post(ct_small().read_bytes()),
        node.post(b""),
        node.post(evil.getvalue(), path="/api/analyze-study"),
        node.post(b"%PDF-1.4\n", path="/api/analyze-study"),
        node.post(b"x", headers={"Authorization": "Bearer wrong"}),
    ]
    assert [r.status_code for r in answers] == [415, 422, 400, 422, 415, 401]
    events = node.events()
    assert [(e.event, e.outcome, e.study, e.detail) for e in events] == [
        ("Import", 8, "", "HTTP analysis upload refused: unsupported_format (HTTP 415)"),
        ("Import", 8, node.audit.hash(ct_study),
         "HTTP analysis upload (dicom) refused: not_radiograph (HTTP 422)"),
        ("Import", 8, "", "HTTP analysis upload refused: empty_file (HTTP 400)"),
        ("Import", 8, "", "HTTP analysis upload (zip) refused: zip_unsafe_path (HTTP 422)"),
        ("Import", 8, "", "HTTP analysis upload refused: not_zip (HTTP 415)"),
        ("UserAuthentication", 4, "", "bearer token refused: POST /api/analyze"),
    ]  # fmt: skip
    assert all(e.count == 1 and e.action in "CE" and e.object == "" for e in events)
    assert events[-1].peer.endswith("(wrong token)")
    node.assert_no_identifiers(ct_study)


def test_an_upload_the_node_fails_on_is_a_major_failure(node, tmp_path):
    # The uploads folder cannot be made (a file is in its place): an error of the node's own,
    # not the client's. The upload is in the trail all the same, with outcome 12.
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / "uploads").write_bytes(b"not a folder")
    client = TestClient(node.client.app, headers=AUTH, raise_server_exceptions=False)
    source = small_cr(tmp_path / "c.dcm", study_uid=new_uid("audit crash"), **CANARY)
    files = {"file": (FILE_NAME, source.read_bytes(), "application/octet-stream")}
    assert client.post("/api/analyze", files=files).status_code == 500
    [event] = node.events()
    assert (event.event, event.action, event.outcome) == ("Import", "C", 12)
    assert event.detail == "HTTP analysis upload (dicom) failed: FileExistsError (HTTP 500)"


def test_an_upload_deleted_by_its_retention_is_audited_as_deleted(node, tmp_path):
    from dicomnode.http.upload_audit import UPLOADS_ACTOR, upload_expired_recorder
    from dicomnode.uploads.store import UPLOADS_DIR, UploadStore

    study = new_uid("audit expiring study")
    source = small_cr(tmp_path / "a.dcm", study_uid=study, **CANARY)
    body = node.post(source.read_bytes()).json()
    store = UploadStore(tmp_path / "var" / UPLOADS_DIR)
    [(upload_id, mtime)] = store.entries()
    recorder = upload_expired_recorder(node.audit, retention_hours=24)
    assert store.remove_expired(retention_hours=24, now=mtime + 23 * 3600,
                                on_removed=recorder) == 0  # fmt: skip
    assert [e.event for e in node.events()] == ["Import"]  # nothing deleted, nothing recorded
    assert store.remove_expired(retention_hours=24, now=mtime + 25 * 3600,
                                on_removed=recorder) == 1  # fmt: skip
    deleted = node.events()[-1]
    assert (deleted.event, deleted.action, deleted.actor) == ("DICOMStudyDeleted", "D",
                                                              UPLOADS_ACTOR)  # fmt: skip
    assert deleted.study == node.audit.hash(study) and deleted.count == 1
    assert deleted.object == f"upload:{upload_id[:8]}" == f"upload:{body['id'][:8]}"
    assert "24 h" in deleted.detail
    node.assert_no_identifiers(study, *_uids(source), body["id"])
