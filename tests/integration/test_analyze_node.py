"""HTTP analysis on a real node (dicomnode serve): a file uploaded over HTTP gives what the
node gives when the same file arrives by C-STORE from dcmtk, and `send=true` delivers the
results to a real dcmtk storescp through the outbox."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pydicom
from pydicom.errors import InvalidDicomError

from tests.support.data import RG3_UNCR, copy_with_new_uids, new_uid, testdata
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import storescu, wait_until

TOKEN = "analyze-node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _get(node, path: str) -> dict:
    response = httpx.get(node.api_url + path, headers=AUTH, timeout=30)
    response.raise_for_status()
    return response.json()


def _upload(node, path: Path, **params: str) -> httpx.Response:
    with open(path, "rb") as fh:
        return httpx.post(node.api_url + "/api/analyze", params=params, headers=AUTH,
                          files={"file": ("upload", fh)}, timeout=300)  # fmt: skip


def _received(peer) -> dict[str, pydicom.Dataset]:
    files = [p for p in peer.output_dir.iterdir() if p.is_file()]
    return {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, files)}


def test_http_result_equals_the_dicom_node_result(tmp_path, node_factory, storescp_peer):
    destination = {"name": "peer", "ae_title": storescp_peer.aet, "host": "127.0.0.1",
                   "port": storescp_peer.port}  # fmt: skip
    config = write_node_config(tmp_path / "node", destinations=[destination],
                               api={"token": TOKEN, "max_upload_mb": 20})  # fmt: skip
    node = node_factory(config).wait_ready()
    cr = testdata(RG3_UNCR)
    source = pydicom.dcmread(cr, stop_before_pixels=True)
    study_uid = str(source.StudyInstanceUID)
    storescu([cr], port=read_ports(config)[0]).check()

    def delivered():
        rows = _get(node, "/api/worklist")["studies"]
        return rows if rows and rows[0]["state"] == "delivered" else None

    wait_until(delivered, timeout=180, what="the C-STOREd study reported and delivered")
    study = _get(node, f"/api/studies/{study_uid}")
    [job] = study["images"]
    by_kind = {r["kind"]: r["sop_instance_uid"] for r in study["results"]}

    response = _upload(node, cr)
    assert response.status_code == 200, response.text
    body = response.json()
    assert abs(body["fracture_probability"] - job["probability"]) <= 1e-6
    assert body["outcome"] == job["outcome"] == study["outcome"]
    assert body["model"]["version"] == job["model_version"]
    assert body["dicom"]["sc_sop_instance_uid"] == by_kind["sc"]
    assert body["dicom"]["sr_sop_instance_uid"] == by_kind["sr"]
    # The Secondary Capture itself is the same picture the node sent to the PACS.
    received = _received(storescp_peer)
    node_sc = received[by_kind["sc"]]
    sc_bytes = httpx.get(node.api_url + body["urls"]["sc"], headers=AUTH, timeout=30).content
    http_sc = pydicom.dcmread(io.BytesIO(sc_bytes))
    assert http_sc.PixelData == node_sc.PixelData
    assert (http_sc.SeriesInstanceUID, http_sc.StudyInstanceUID) == \
        (node_sc.SeriesInstanceUID, node_sc.StudyInstanceUID)  # fmt: skip

    # The demo's outcome here is doubt: the findings (GSPS) are made too, with the same UID.
    assert body["dicom"]["gsps_sop_instance_uid"] == by_kind["gsps"]
    # send=true for results the node already delivered: nothing is queued twice.
    again = _upload(node, cr, send="true").json()["send"]
    assert {r["sop_instance_uid"] for r in again["results"]} == set(by_kind.values())
    assert all(d["state"] == "delivered" for r in again["results"] for d in r["deliveries"])

    # send=true for a new study: its SR, SC and GSPS reach the peer through the outbox.
    other = copy_with_new_uids(cr, tmp_path / "other.dcm", study_uid=new_uid("http-send"))
    sent = _upload(node, other, send="true")
    assert sent.status_code == 200, sent.text
    queued = sent.json()["send"]
    assert queued["destinations"] == ["peer"]
    wanted = {r["sop_instance_uid"] for r in queued["results"]}
    assert len(wanted) == 3
    assert wanted == {sent.json()["dicom"][f"{kind}_sop_instance_uid"]
                      for kind in ("sc", "sr", "gsps")}  # fmt: skip
    wait_until(
        lambda: wanted <= set(_received(storescp_peer)),
        timeout=120,
        what="the uploaded study's SR, SC and GSPS at the peer",
        ignore=(InvalidDicomError, EOFError, OSError),
    )  # a file still being written
    sr = _received(storescp_peer)[sent.json()["dicom"]["sr_sop_instance_uid"]]
    assert sr.StudyInstanceUID == new_uid("http-send") and sr.Modality == "SR"


def test_too_large_upload_over_real_http(tmp_path, node_factory):
    config = write_node_config(tmp_path / "node", api={"max_upload_mb": 2})
    node = node_factory(config).wait_ready()
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(5 * 1024 * 1024))
    for lang, limit in (("en", "2 MB"), ("uk", "2 МБ")):
        with open(big, "rb") as fh:
            response = httpx.post(node.api_url + "/api/analyze", files={"file": ("big.png", fh)},
                                  headers={"Accept-Language": lang}, timeout=120)  # fmt: skip
        assert response.status_code == 413
        assert response.json()["code"] == "too_large" and limit in response.json()["detail"]
    # The node is still fine and takes the next request.
    assert httpx.get(node.api_url + "/healthz", timeout=10).status_code == 200
