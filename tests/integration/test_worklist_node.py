"""The worklist and metrics of a real node (dicomnode serve) after real C-STOREs by dcmtk."""

from __future__ import annotations

from io import BytesIO

import httpx
import pydicom
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.support.data import RG3_UNCR, copy_with_new_uids, ct_small, new_uid, testdata
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import storescu, wait_until

TOKEN = "node-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _get(node, path: str) -> httpx.Response:
    response = httpx.get(node.api_url + path, headers=AUTH, timeout=30)
    response.raise_for_status()
    return response


def _samples(node) -> dict[str, float]:
    """Every sample of GET /metrics as {"name{label=value}": value}."""
    out = {}
    for family in text_string_to_metric_families(_get(node, "/metrics").text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            if "le" in s.labels:
                continue
            out[s.name + (f"{{{labels}}}" if labels else "")] = s.value
    return out


def test_real_cstores_are_counted_listed_and_thumbnailed(tmp_path, status_scp, node_factory):
    status_scp.status = 0xA700  # the first delivery attempts fail: retries are counted
    destination = {"name": "pacs", "ae_title": status_scp.aet, "host": "127.0.0.1",
                   "port": status_scp.port}  # fmt: skip
    config = write_node_config(tmp_path / "node", destinations=[destination],
                               api={"token": TOKEN})  # fmt: skip
    node = node_factory(config).wait_ready()
    port = read_ports(config)[0]
    assert httpx.get(node.api_url + "/metrics", timeout=10).status_code == 401

    cr = testdata(RG3_UNCR)
    multiframe = copy_with_new_uids(cr, tmp_path / "mf.dcm", study_uid=new_uid("mf"),
                                    NumberOfFrames=2)  # fmt: skip
    no_study = copy_with_new_uids(cr, tmp_path / "nostudy.dcm", StudyInstanceUID=None)
    sent = storescu([cr, ct_small(), multiframe, no_study], port=port)
    assert sent.statuses == [0x0000, 0x0000, 0x0000, 0xA900]

    cr_study = pydicom.dcmread(cr, stop_before_pixels=True).StudyInstanceUID
    wait_until(lambda: _samples(node).get("dicomnode_delivery_retries_total", 0) >= 1,
               timeout=120, what="a failed delivery attempt")  # fmt: skip
    status_scp.status = 0x0000

    def delivered():
        rows = _get(node, "/api/worklist").json()["studies"]
        states = {r["study_instance_uid"]: r["state"] for r in rows}
        return rows if states.get(cr_study) == "delivered" else None

    rows = wait_until(delivered, timeout=120, what="the CR study delivered")
    assert len(rows) == 2  # the CT study (only skipped images) is not on the worklist
    by_uid = {r["study_instance_uid"]: r for r in rows}
    failed = by_uid[new_uid("mf")]
    assert failed["state"] == "failed" and failed["outcome"] is None
    cr_row = by_uid[cr_study]
    assert cr_row["outcome"] in {"positive", "doubt", "negative"}
    assert cr_row["modalities"] == ["CR"] and cr_row["images"] == 1
    assert rows[0] is cr_row  # an outcome comes before a study without one

    metrics = _samples(node)
    assert metrics["dicomnode_images_received_total"] == 3
    assert metrics["dicomnode_stores_rejected_total{status=0xA900}"] == 1
    assert metrics["dicomnode_images_skipped_total"] == 1
    assert metrics["dicomnode_images_classified_total"] == 1
    assert metrics["dicomnode_jobs_failed_total"] == 1
    # The SC and the SR, and the GSPS unless the outcome is negative.
    located = cr_row["outcome"] != "negative"
    assert metrics["dicomnode_results_delivered_total"] == 2 + located
    assert metrics["dicomnode_delivery_retries_total"] >= 1
    assert metrics["dicomnode_queue_depth"] == 0
    assert metrics["dicomnode_inference_seconds_count"] == 1
    assert metrics["dicomnode_end_to_end_seconds_count"] == 1  # one SC delivered
    assert metrics["dicomnode_end_to_end_seconds_sum"] > 0

    [thumbnail] = cr_row["links"]["thumbnails"]
    png = _get(node, thumbnail)
    assert png.headers["content-type"] == "image/png"
    picture = Image.open(BytesIO(png.content))
    assert picture.format == "PNG" and max(picture.size) <= 256 and min(picture.size) > 16
    study = _get(node, cr_row["links"]["study"]).json()
    assert [r["thumbnail"] for r in study["results"] if r["kind"] == "sc"] == [thumbnail]

    # Every result names its model: the demo's, per image and per study report.
    assert cr_row["model"]["untrained_demo"] and cr_row["model"]["version"].startswith("demo-")
    assert study["model"] == cr_row["model"]
    assert all(i["model_trained"] is False for i in study["images"] if i["probability"])
    # One date format in every API.
    assert study["study_date"] == cr_row["study_date"] == "2004-08-26"
    assert study["study_time"] == cr_row["study_time"] == "18:50:59"

    # The node's own SR, SC and GSPS (the demo's RG3 result is indeterminate) sent back to it (a
    # routing loop): skipped as its own output, not counted among the study's modalities.
    own = [p for p in (tmp_path / "node" / "var").rglob("*") if p.is_file() and _own(p)]
    assert sorted(str(pydicom.dcmread(p, stop_before_pixels=True).Modality) for p in own) == [
        "OT", "PR", "SR"]  # fmt: skip
    assert storescu(own, port=port).statuses == [0x0000] * 3
    wait_until(
        lambda: len([j for j in _get(node, f"/api/jobs?study_instance_uid={cr_study}").json()
                     ["jobs"] if j["reason"] == "own output"]) == 3,
        timeout=60, what="the node's own objects skipped",
    )  # fmt: skip
    assert _get(node, cr_row["links"]["study"]).json()["modalities"] == ["CR"]
    rows = _get(node, "/api/worklist").json()["studies"]
    assert next(r for r in rows if r["study_instance_uid"] == cr_study)["modalities"] == ["CR"]


def _own(path) -> bool:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True).get("Manufacturer") == "dicomnode"
    except Exception:
        return False
