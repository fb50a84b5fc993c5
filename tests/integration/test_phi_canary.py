"""PHI canary: images whose patient attributes hold unique canary strings go through receive,
classify, a failed then a successful delivery, a rejected dataset, a failed job retried through
the API, a refused token, reads of the worklist, study and thumbnails, an HTTP analysis upload
(named after the patient) with its download, a refused upload, and retention. Afterwards no log
line, API error message, CLI output or audit record holds a canary string or a raw Study/SOP
Instance UID — and the audit trail tells what happened."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import ComputedRadiographyImageStorage

from dicomnode.deliver.scu import keep_responses
from tests.support.data import new_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import StatusSCP, storescu, wait_until
from tests.support.smallcr import db_rows, small_cr

TOKEN = "canary-token"
DX_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"


def _send_mismatched(path: Path, *, port: int) -> int:
    """C-STORE a file whose meta says CR while its dataset says DX (pynetdicom sends the file
    as is and takes the request's SOP class from the meta): the node must answer 0xA900."""
    ae = AE(ae_title="MISMATCH")
    ae.add_requested_context(ComputedRadiographyImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE")
    keep_responses(assoc)  # pynetdicom#875: a response lost under load
    assert assoc.is_established
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
        assoc.release()
    return int(status.Status)


def test_no_canary_or_raw_uid_escapes(tmp_path, node_factory):
    tag = uuid.uuid4().hex[:8].upper()
    canaries = {
        "PatientName": f"CANARY^N{tag}",
        "PatientID": f"CANARYID{tag}",
        "AccessionNumber": f"CA{tag}",
        "PatientBirthDate": "18731029",
    }
    study = new_uid("canary-study", tag)
    images = [small_cr(tmp_path / "in" / f"{i}.dcm", study_uid=study, **canaries) for i in range(2)]
    broken = small_cr(tmp_path / "in" / "broken.dcm", study_uid=study, Rows=4000, **canaries)
    mismatched = small_cr(tmp_path / "in" / "mismatch.dcm", study_uid=study, **canaries)
    ds = pydicom.dcmread(mismatched)
    ds.SOPClassUID = DX_CLASS  # the meta still says CR
    ds.save_as(mismatched, enforce_file_format=False)
    sent = [images[0], images[1], broken, mismatched]
    uids = {study} | {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sent}

    with StatusSCP(status=0xA700) as pacs:
        destination = {"name": "pacs", "ae_title": pacs.aet, "host": "127.0.0.1", "port": pacs.port}
        config = write_node_config(
            tmp_path / "node", destinations=[destination], api={"token": TOKEN}
        )
        port = read_ports(config)[0]
        node = node_factory(config).wait_ready()
        api = httpx.Client(
            base_url=node.api_url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        db = tmp_path / "node" / "var" / "dicomnode.db"

        storescu([*images, broken], port=port).check()
        assert _send_mismatched(mismatched, port=port) == 0xA900

        def failed_job() -> int | None:
            jobs = api.get("/api/jobs", params={"state": "failed"}).json()["jobs"]
            return jobs[0]["id"] if jobs else None

        job_id = wait_until(failed_job, timeout=120, what="the broken image to fail")
        wait_until(lambda: pacs.attempts >= 1, timeout=120, what="a delivery refused 0xA700")
        pacs.status = 0x0000
        assert api.post(f"/api/jobs/{job_id}/retry").status_code == 200
        wait_until(lambda: failed_job() == job_id, timeout=120, what="the retried job to fail")

        def delivered() -> bool:
            results = api.get(f"/api/studies/{study}").json()["results"]
            # A GSPS too for each image that is not negative (its UIDs are checked below too).
            kinds = sorted(r["kind"] for r in results if r["kind"] != "gsps")
            return kinds == ["sc", "sc", "sr"] and all(
                d["state"] == "delivered" for r in results for d in r["deliveries"]
            )

        wait_until(delivered, timeout=180, what="2 SC + 1 SR delivered after the failure")
        uids |= {str(d.SOPInstanceUID) for d in pacs.datasets}

        # Reads of identifiers and HTTP analysis, each file named after the patient.
        assert len(api.get("/api/worklist").json()["studies"]) == 1
        results = api.get(f"/api/studies/{study}").json()["results"]
        thumbnail = next(r["thumbnail"] for r in results if r["thumbnail"])
        assert api.get(thumbnail).status_code == 200
        named = f"{canaries['PatientName']}-{canaries['PatientID']}.dcm"
        upload = api.post("/api/analyze", files={"file": (named, images[0].read_bytes())})
        assert upload.status_code == 200, upload.text
        assert api.get(upload.json()["urls"]["sc"]).status_code == 200
        uids |= {upload.json()["dicom"]["sc_sop_instance_uid"],
                 upload.json()["dicom"]["sr_sop_instance_uid"]}  # fmt: skip
        letter = f"%PDF-1.4 referral for {canaries['PatientName']}\n".encode() * 10
        refused_upload = api.post("/api/analyze", files={"file": (named, letter)})
        assert refused_upload.status_code == 415

        classified = api.get("/api/jobs", params={"state": "classified"}).json()["jobs"][0]["id"]
        errors = [
            httpx.get(node.api_url + "/api/jobs", timeout=10),  # no token
            httpx.get(
                node.api_url + "/api/jobs", headers={"Authorization": "Bearer wrong"}, timeout=10
            ),
            api.get(f"/api/studies/{new_uid('nope', tag)}"),
            api.get("/api/jobs/999999"),
            api.post(f"/api/jobs/{classified}/retry"),  # 409: not failed
            api.get("/api/audit", params={"since": "not-a-time"}),
        ]
        assert [r.status_code for r in errors] == [401, 401, 404, 404, 409, 422]
        job = api.get(f"/api/jobs/{job_id}").json()
        assert job["reason"]  # the failure is visible…
        error_text = "\n".join(r.text for r in [*errors, refused_upload]) + job["reason"]

        later = (datetime.now(UTC) + timedelta(days=400)).isoformat()
        retention = subprocess.run(
            [
                sys.executable,
                "-m",
                "dicomnode.cli",
                "retention",
                "--config",
                str(config),
                "--now",
                later,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert retention.returncode == 0, retention.stderr
        assert db_rows(db, "select count(*) from study") == [(0,)]
        export = subprocess.run(
            [sys.executable, "-m", "dicomnode.cli", "audit", "export", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert export.returncode == 0, export.stderr
        api_audit = api.get("/api/audit", params={"limit": 1000}).json()["events"]
        node.stop()

    audit = [json.loads(line) for line in export.stdout.splitlines()]
    log = node.log_path.read_text()
    haystacks = {
        "node log": log,
        "API errors": error_text,
        "retention CLI": retention.stdout + retention.stderr,
        "audit export": export.stdout + export.stderr,
        "audit API": json.dumps(api_audit),
    }
    for where, text in haystacks.items():
        for name, value in canaries.items():
            assert value not in text, f"{name} canary found in the {where}"
        for uid in uids:
            assert uid not in text, f"a raw UID found in the {where}"

    # The trail is not empty for lack of events: each step of the journey is in it.
    def events(event: str, **match: object) -> list[dict]:
        return [
            e for e in audit if e["event"] == event and all(e[k] == v for k, v in match.items())
        ]

    received = events("DICOMInstancesTransferred", action="C", actor="STORESCU", outcome=0)
    assert sum(e["count"] for e in received) == 3
    assert all(e["peer"].startswith("127.0.0.1:") for e in received)  # from whom
    refused = events("DICOMInstancesTransferred", action="C", actor="MISMATCH", outcome=8)
    assert refused and "0xA900" in refused[0]["detail"]
    sent = events("DICOMInstancesTransferred", action="R", actor="DICOMNODE")
    assert {e["outcome"] for e in sent} == {0, 4}
    assert any("0xA700" in e["detail"] for e in sent if e["outcome"] == 4)
    assert events("DICOMInstancesAccessed", action="U", object=f"job:{job_id}")
    assert len(events("UserAuthentication", outcome=4)) == 2
    assert events("DICOMStudyDeleted", action="D")
    study_hash = received[0]["study"]
    [imported] = events("Import", action="C", outcome=0)
    assert imported["study"] == study_hash and imported["peer"].endswith("(bearer token)")
    [refused_import] = events("Import", outcome=8)
    assert "unsupported_format" in refused_import["detail"]
    assert events("Export", action="R", study=study_hash)
    [worklist] = [e for e in events("Query", action="E") if "/api/worklist" in e["detail"]]
    assert worklist["count"] == 1 and worklist["detail"].startswith("GET /api/worklist: 1 rows")
    assert events("Query", action="E", study="")  # the job lists polled above
    reads = events("DICOMInstancesAccessed", action="R", study=study_hash)
    assert {e["detail"] for e in reads} >= {"GET /api/studies/{uid}; patient identifiers shown",
                                            "SC thumbnail"}  # fmt: skip
    assert "job finished" in log and "CANARY" not in log
