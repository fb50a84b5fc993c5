"""What the Analyze page needs of the API (issue 19): one result per study of a ZIP, a refusal
with its reason, dates in the client's language, and a preview of a DICOM upload.

The real app (FastAPI TestClient, SQLite, the tiny demo model; fixtures of
`test_analyze_api`), real files from pydicom-data: RG3 (CR, uncompressed and JPEG 2000) and
CT_small.
"""

from __future__ import annotations

import datetime
import io
import zipfile
from pathlib import Path

import numpy as np
from openpyxl import load_workbook
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.integration.test_analyze_api import (  # noqa: F401 (fixtures)
    AUTH,
    TOKEN,
    classifier,
    client,
    encoded,
    make_client,
    post,
    uploads_of,
)
from tests.reliability.malformed import CR_CLASS, deflate_bomb, file_with
from tests.support.data import RG3_J2KR, RG3_UNCR, copy_with_new_uids, ct_small, new_uid, testdata

CT_REASON = "modality CT is not a radiograph"


def two_patients_zip(tmp_path: Path) -> tuple[bytes, list[str]]:
    """An export holding three studies of three patients: the RG3 CR as it is, a second CR
    study of another patient (another date), and a CT study (nothing to classify)."""
    first = testdata(RG3_UNCR)
    second = copy_with_new_uids(first, tmp_path / "b.dcm", study_uid=new_uid("study-b"),
                                series_uid=new_uid("series-b"), PatientID="PAT-B",
                                PatientName="OTHER^PATIENT", StudyDate="20240315")  # fmt: skip
    ct = copy_with_new_uids(ct_small(), tmp_path / "ct.dcm", study_uid=new_uid("study-ct"),
                            PatientID="PAT-C")  # fmt: skip
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("EXPORT/1/IM1", first.read_bytes())
        zf.writestr("EXPORT/2/IM1", second.read_bytes())
        zf.writestr("EXPORT/3/CT1", ct.read_bytes())
    uids = [str(dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in (first, second, ct)]
    return buffer.getvalue(), uids


def test_a_zip_with_several_patients_gives_one_result_per_study(client, tmp_path):  # noqa: F811
    data, uids = two_patients_zip(tmp_path)
    response = post(client, data, "export.zip", path="/api/analyze-study", params={"lang": "en"})
    assert response.status_code == 200, response.text
    body = response.json()
    studies = {s["study_instance_uid"]: s for s in body["studies"]}
    assert list(studies) == uids  # archive order, one result each
    a, b, ct = (studies[u] for u in uids)
    for study, entry in ((a, "EXPORT/1/IM1"), (b, "EXPORT/2/IM1")):
        assert study["outcome"] in ("positive", "doubt", "negative")
        assert study["label_text"] and study["reason"] is None
        assert study["entries"] == [entry] and study["classified"] == 1
        assert study["urls"]["sr"] != ct["urls"].get("sr")
    assert a["urls"]["sr"] != b["urls"]["sr"]  # a report of its own per study
    assert ct["outcome"] is None and ct["reason"] == CT_REASON
    assert ct["entries"] == ["EXPORT/3/CT1"] and "sr" not in ct["urls"]
    assert b["summary"]["study_date"] == "20240315"
    assert b["summary"]["study_date_text"] == "March 15, 2024"
    uk = client.get(body["urls"]["result"], params={"lang": "uk"}).json()
    assert uk["studies"][1]["summary"]["study_date_text"] == "15 березня 2024\u202fр."
    assert "PAT-B" not in response.text and "OTHER" not in response.text  # no identifiers

    workbook = load_workbook(io.BytesIO(client.get(body["urls"]["report"]).content))
    header, *rows = list(workbook["Studies"].values)
    by_uid = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert list(by_uid) == uids
    assert by_uid[uids[2]]["Reason"] == CT_REASON and by_uid[uids[2]]["Outcome"] is None
    assert by_uid[uids[1]]["Study date"] == datetime.datetime(2024, 3, 15)  # a date cell
    assert by_uid[uids[1]]["Outcome"] == b["outcome"]


def test_an_out_of_scope_upload_is_a_refusal_with_its_reason(client):  # noqa: F811
    response = post(client, ct_small().read_bytes(), "ct.dcm", params={"lang": "uk"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "not_radiograph" and body["reason"] == CT_REASON
    # the reason in the reader's language on the page; in English in `reason` (as in logs)
    assert body["detail"] == "Цей файл DICOM не класифікується: модальність CT не є рентгенограмою."
    assert uploads_of(client) == []
    unsupported = post(client, b"just text").json()
    assert "reason" not in unsupported  # a refusal without a cause in the file has none


def test_a_dicom_result_has_its_date_formatted(client):  # noqa: F811
    body = post(client, testdata(RG3_UNCR).read_bytes(), "cr.dcm", params={"lang": "en"}).json()
    raw = body["dicom"]["study_date"]
    expected = datetime.datetime.strptime(raw, "%Y%m%d").strftime("%B %-d, %Y")
    assert body["dicom"]["study_date_text"] == expected


def preview(http, payload: bytes, **kwargs):
    return http.post("/api/preview", files={"file": ("x", payload, "application/dicom")},
                       **kwargs)  # fmt: skip


def test_the_preview_of_a_dicom_upload_is_what_the_node_sees(client):  # noqa: F811
    for name in (RG3_UNCR, RG3_J2KR):
        response = preview(client, testdata(name).read_bytes())
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        assert response.headers["cache-control"] == "no-store"
        picture = Image.open(io.BytesIO(response.content))
        assert picture.format == "PNG" and picture.mode == "L" and max(picture.size) == 512
        pixels = np.asarray(picture)
        assert pixels.std() > 20  # a radiograph, not a blank
    ct = preview(client, ct_small().read_bytes())
    assert ct.status_code == 200  # shown; the analysis then refuses it with the reason
    tiff = preview(client, encoded("TIFF"))  # browsers show no TIFF: the node does
    assert tiff.status_code == 200 and max(Image.open(io.BytesIO(tiff.content)).size) == 512
    colour = testdata("SC_rgb.dcm").read_bytes()
    refused = preview(client, colour, params={"lang": "en"})
    assert refused.status_code == 422 and refused.json()["code"] == "preview_unavailable"
    assert refused.json()["reason"] == "colour image (3 samples per pixel) is not supported"
    assert uploads_of(client) == []  # nothing kept


def test_the_preview_keeps_the_analysis_limits(make_client):  # noqa: F811
    http = make_client(token=TOKEN, max_upload_mb=2, node={"max_dataset_mb": 16})
    radiograph = testdata(RG3_UNCR).read_bytes()
    assert preview(http, radiograph).status_code == 401  # the page's sign-in, or the token
    large = preview(http, radiograph, headers=AUTH)
    assert len(radiograph) > 2 * 1024 * 1024
    assert large.status_code == 413 and large.json()["code"] == "too_large"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.dcm", b"DICM")
    for unsupported in (archive.getvalue(), b"just text"):
        answer = preview(http, unsupported, headers=AUTH)
        assert answer.status_code == 415 and answer.json()["code"] == "preview_unsupported"

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_CLASS
    meta.MediaStorageSOPInstanceUID = new_uid("preview", "bomb")
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = file_with(meta, deflate_bomb(16 + 64))  # past the configured node.max_dataset_mb
    assert len(bomb) < 2 * 1024 * 1024
    refused = preview(http, bomb, headers=AUTH)
    assert refused.status_code == 413 and refused.json()["code"] == "preview_unavailable"
    assert refused.json()["reason"] == "inflated dataset larger than max_dataset_mb"
    assert uploads_of(http) == []
