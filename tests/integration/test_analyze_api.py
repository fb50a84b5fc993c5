"""POST /api/analyze and /api/analyze-study on the real app (FastAPI TestClient, a real SQLite
database, the tiny demo model): each kind of upload gets its documented answer.

Images are made from a real radiograph (pydicom-data RG3) through `preprocess.to_grayscale`
and PIL; ZIP archives are built here, including hostile ones.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from PIL import Image
from pydicom import dcmread

from dicomnode.config import Settings
from dicomnode.http.app import ApiContext, create_app
from dicomnode.imaging import preprocess
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.objects.outputs import SC, SR, OutputUIDs
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from dicomnode.uploads.store import UPLOADS_DIR, UploadStore
from tests.support.data import RG3_UNCR, TINY_ARCH, copy_with_new_uids, ct_small, new_uid, testdata

TOKEN = "analyze-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UID_ROOT = "1.2.826.0.1.3680043.8.498.4711."


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.demo(architecture=TINY_ARCH, device="cpu")


@pytest.fixture
def make_client(tmp_path: Path, classifier: Classifier) -> Iterator[Callable[..., TestClient]]:
    engines = []

    def make(*, destinations: list[dict[str, Any]] | None = None,
             node: dict[str, Any] | None = None, **api: Any) -> TestClient:  # fmt: skip
        data = tmp_path / f"var{len(engines)}"
        settings = Settings.model_validate({"node": {"data_dir": str(data), **(node or {})},
                                            "api": api,
                                            "destinations": destinations or []})  # fmt: skip
        engine = make_engine(f"sqlite:///{data / 'dicomnode.db'}")
        engines.append(engine)
        ctx = ApiContext(settings=settings, jobs=Jobs(engine), metrics=Metrics(),
                         card=lambda: classifier.card, readiness=dict,
                         spool=Spool(data / "spool"), classifier=classifier)  # fmt: skip
        client = TestClient(create_app(ctx))
        client.data_dir = data  # type: ignore[attr-defined]
        return client

    yield make
    for engine in engines:
        engine.dispose()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def uploads_of(client: TestClient) -> list[Path]:
    folder = client.data_dir / UPLOADS_DIR  # type: ignore[attr-defined]
    return sorted(folder.iterdir()) if folder.is_dir() else []


def radiograph() -> np.ndarray:
    return preprocess.to_grayscale(dcmread(testdata(RG3_UNCR)))


def encoded(fmt: str, **options: Any) -> bytes:
    picture = Image.fromarray(np.round(radiograph() * 255).astype(np.uint8), "L")
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def post(client: TestClient, payload: bytes, name: str = "upload", *, path: str = "/api/analyze",
         **kwargs: Any) -> Any:  # fmt: skip
    return client.post(path, files={"file": (name, payload, "application/octet-stream")}, **kwargs)


def check_image_result(body: dict[str, Any], classifier: Classifier) -> None:
    p = body["fracture_probability"]
    assert 0.0 <= p <= 1.0
    assert body["normal_probability"] == pytest.approx(1.0 - p)
    assert body["confidence"] == pytest.approx(max(p, 1.0 - p))
    card = classifier.card
    expected = "positive" if p >= card.threshold_high else "negative" \
        if p < card.threshold_low else "doubt"  # fmt: skip
    assert body["outcome"] == expected
    assert body["label"] == {"positive": "fracture", "doubt": "indeterminate",
                             "negative": "no_fracture"}[expected]  # fmt: skip
    assert body["thresholds"] == {"low": card.threshold_low, "high": card.threshold_high}
    assert body["model"]["version"] == card.version
    assert body["untrained_demo"] is True and "UNTRAINED DEMO" in body["model"]["display_name"]
    assert body["processing_ms"] > 0
    assert "not a diagnosis" in body["disclaimer"]


def check_overlay(client: TestClient, body: dict[str, Any]) -> Image.Image:
    response = client.get(body["urls"]["overlay"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(response.content))
    assert overlay.format == "PNG" and overlay.mode == "RGB" and max(overlay.size) > 256
    return overlay


@pytest.mark.parametrize(
    ("fmt", "options", "kind"),
    [("PNG", {}, "png"), ("JPEG", {"quality": 92}, "jpeg"), ("BMP", {}, "bmp"),
     ("TIFF", {}, "tiff")],
)  # fmt: skip
def test_images_from_a_real_radiograph_are_classified(client, classifier, fmt, options, kind):
    # The name says DICOM: the content decides.
    response = post(client, encoded(fmt, **options), "image.dcm")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == kind and body["type"] == "image"
    check_image_result(body, classifier)
    assert body["image"] == {"rows": 1760, "columns": 1760}
    assert "sc" not in body["urls"] and "dicom" not in body
    check_overlay(client, body)
    # Close to the DICOM's own probability (8-bit / JPEG quantisation only).
    direct = classifier.predict(radiograph()).probability
    assert body["fracture_probability"] == pytest.approx(direct, abs=0.02)
    again = client.get(body["urls"]["result"]).json()
    assert again["fracture_probability"] == body["fracture_probability"]


def test_dicom_upload_gives_sc_sr_and_metadata(client, classifier):
    source = testdata(RG3_UNCR)
    response = post(client, source.read_bytes(), "photo.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["kind"] == "dicom"
    check_image_result(body, classifier)
    ds = dcmread(source)
    expected = classifier.predict(preprocess.to_grayscale(ds)).probability
    assert body["fracture_probability"] == pytest.approx(expected, abs=1e-6)
    meta = body["dicom"]
    assert meta["study_instance_uid"] == ds.StudyInstanceUID
    assert meta["modality"] == "CR" and meta["manufacturer"] == str(ds.Manufacturer)
    assert meta["body_part_examined"] == "EXTREMITY" and meta["rows"] == 1760
    assert meta["sop_class"] == "Computed Radiography Image Storage"
    uids = OutputUIDs(root=UID_ROOT, model_version=classifier.card.version)
    assert meta["sc_sop_instance_uid"] == uids.instance(SC, str(ds.SOPInstanceUID))
    assert meta["sr_sop_instance_uid"] == uids.instance(SR, str(ds.StudyInstanceUID))
    sc = client.get(body["urls"]["sc"])
    assert sc.status_code == 200 and sc.headers["content-type"] == "application/dicom"
    assert "attachment" in sc.headers["content-disposition"]
    sc_ds = dcmread(io.BytesIO(sc.content))
    assert sc_ds.SOPInstanceUID == meta["sc_sop_instance_uid"]
    assert sc_ds.StudyInstanceUID == ds.StudyInstanceUID and sc_ds.BurnedInAnnotation == "YES"
    sr_ds = dcmread(io.BytesIO(client.get(body["urls"]["sr"]).content))
    assert sr_ds.SOPInstanceUID == meta["sr_sop_instance_uid"] and sr_ds.Modality == "SR"
    overlay = check_overlay(client, body)
    assert overlay.size == (sc_ds.Columns, sc_ds.Rows)  # the SC's own pixels
    assert "PatientName" not in str(body) and str(ds.PatientName) not in str(body)


def test_dicom_without_preamble_is_still_dicom(client, classifier):
    ds = dcmread(testdata(RG3_UNCR))
    bare = io.BytesIO()
    del ds.file_meta
    ds.preamble = None
    ds.save_as(bare, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert bare.getvalue()[128:132] != b"DICM"
    body = post(client, bare.getvalue()).json()
    assert body["kind"] == "dicom"
    expected = classifier.predict(preprocess.to_grayscale(dcmread(testdata(RG3_UNCR))))
    assert body["fracture_probability"] == pytest.approx(expected.probability, abs=1e-6)


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"", 400, "empty_file"),
        (b"%PDF-1.4 this is a document, not an image\n" * 20, 415, "unsupported_format"),
        (b"GIF89a" + bytes(64), 415, "unsupported_format"),
        (b"\x89PNG\r\n\x1a\n" + b"truncated", 422, "image_unreadable"),
    ],
    ids=["empty", "non-image", "gif", "broken-png"],
)
def test_files_that_are_not_usable_images(client, data, status, code):
    response = post(client, data, "x.png")
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert response.json()["detail"]
    assert uploads_of(client) == []  # nothing kept of a refused upload


def test_a_ct_is_not_a_radiograph(client):
    response = post(client, ct_small().read_bytes(), "ct.dcm")
    assert response.status_code == 422
    assert response.json()["code"] == "not_radiograph"
    assert "modality CT is not a radiograph" in response.json()["detail"]


def test_images_below_the_cards_min_image_size_are_not_classified(client):
    """A 16 x 16 DICOM CR or picture is no diagnostic radiograph (the demo card: 256 px)."""
    picture = Image.fromarray(np.round(radiograph()[::110, ::110] * 255).astype(np.uint8), "L")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    reason = ("image too small to be a diagnostic radiograph (16x16 px; the model card's "
              "min_image_size is 256 px per side)")  # fmt: skip
    response = post(client, buffer.getvalue(), "tiny.png", params={"lang": "uk"})
    assert response.status_code == 422 and response.json()["code"] == "image_too_small"
    body = response.json()  # the page's text in Ukrainian; the English reason and its code
    assert body["detail"] == (
        "Це зображення не класифікується: зображення замале для діагностичної рентгенограми "
        "(16x16 пікс.; min_image_size картки моделі — 256 пікс. на сторону)."
    )
    assert body["reason"] == reason and body["reason_code"] == "too_small"
    ds = dcmread(testdata(RG3_UNCR))
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[::110, ::110]).tobytes()
    ds.Rows = ds.Columns = 16
    dicom = io.BytesIO()
    ds.save_as(dicom, enforce_file_format=True)
    response = post(client, dicom.getvalue(), "tiny.dcm")
    assert response.status_code == 422 and response.json()["code"] == "not_radiograph"
    assert response.json()["detail"] == f"This DICOM file is not classified: {reason}."
    about = client.get("/about-model", params={"lang": "en"})
    assert 'id="card-min-image-size">256 × 256 px' in about.text


def test_errors_in_the_clients_language(client):
    uk = post(client, b"just text", headers={"Accept-Language": "uk-UA,uk;q=0.9,en;q=0.5"})
    assert uk.status_code == 415 and uk.headers["content-language"] == "uk"
    assert uk.json()["detail"].startswith("Непідтримуваний файл")
    en = post(client, b"just text", params={"lang": "en"}, headers={"Accept-Language": "uk"})
    assert en.json()["detail"].startswith("Not a supported file")
    empty = post(client, b"", params={"lang": "uk"})
    assert empty.json()["detail"] == "Файл порожній."


def test_missing_or_several_files(client):
    assert client.post("/api/analyze", data={"x": "1"}).json()["code"] == "no_file"
    two = client.post("/api/analyze", files=[("file", ("a.png", encoded("PNG"))),
                                             ("file", ("b.png", encoded("PNG")))])  # fmt: skip
    assert two.status_code == 400 and two.json()["code"] == "too_many_files"
    assert client.post("/api/analyze", content=b"xx",
                       headers={"content-type": "text/plain"}).status_code == 400  # fmt: skip


def test_a_zip_sent_to_analyze_is_pointed_to_analyze_study(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("a.dcm", testdata(RG3_UNCR).read_bytes())
    response = post(client, buffer.getvalue(), "study.png")
    assert response.status_code == 415 and response.json()["code"] == "zip_for_single"
    assert post(client, encoded("PNG"), path="/api/analyze-study").json()["code"] == "not_zip"


def test_too_large_uploads_are_refused(make_client):
    client = make_client(max_upload_mb=1)
    big = encoded("BMP")  # 1760² 8-bit BMP ≈ 3 MB
    assert len(big) > 2 * 1024 * 1024
    response = post(client, big, "big.bmp", params={"lang": "uk"})
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": "Файл більший за обмеження 1 МБ.", "code": "too_large"}
    # Without Content-Length (chunked): counted while it is read.
    boundary = "dicomnodeboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + big + \
        f"\r\n--{boundary}--\r\n".encode()  # fmt: skip
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    multipart = {"content-type": f"multipart/form-data; boundary={boundary}"}
    streamed = client.post("/api/analyze", content=chunks, headers=multipart)
    assert streamed.status_code == 413 and streamed.json()["code"] == "too_large"
    # Just under the limit is fine.
    small = encoded("JPEG", quality=80)
    assert len(small) < 1024 * 1024
    assert post(client, small).status_code == 200
    assert len(uploads_of(client)) == 1


# --- ZIP studies --------------------------------------------------------------------------------


def study_zip(tmp_path: Path) -> tuple[bytes, dict[str, Any]]:
    """One CR study exported with nested folders: two radiographs in two series, a CT put
    into the same study (skipped), a text file (not DICOM) and folder entries."""
    cr = testdata(RG3_UNCR)
    study_uid = str(dcmread(cr, stop_before_pixels=True).StudyInstanceUID)
    second = copy_with_new_uids(cr, tmp_path / "second.dcm", series_uid=new_uid("zip-series"),
                                SeriesNumber=2, InstanceNumber=1)  # fmt: skip
    ct = copy_with_new_uids(ct_small(), tmp_path / "ct.dcm", study_uid=study_uid)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("EXPORT/", b"")
        zf.writestr("EXPORT/PAT1/STUDY1/SER1/IM000001", cr.read_bytes())
        zf.writestr("EXPORT/PAT1/STUDY1/SER2/deeper/still/IM000002.dcm", second.read_bytes())
        zf.writestr("EXPORT/PAT1/STUDY1/SER3/CT1", ct.read_bytes())
        zf.writestr("EXPORT/README.TXT", b"exported by a viewer\n")
    return buffer.getvalue(), {"study_uid": study_uid, "sop_uids": [
        str(dcmread(cr, stop_before_pixels=True).SOPInstanceUID),
        str(dcmread(second, stop_before_pixels=True).SOPInstanceUID)]}  # fmt: skip


def test_zip_study_with_nested_folders(client, classifier, tmp_path):
    data, expected = study_zip(tmp_path)
    response = post(client, data, "study.zip", path="/api/analyze-study")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "study" and body["kind"] == "zip"
    assert body["counts"] == {"entries": 4, "dicom": 3, "classified": 2, "skipped": 2,
                              "failed": 0}  # fmt: skip
    [study] = body["studies"]
    assert study["study_instance_uid"] == expected["study_uid"]
    assert (study["images"], study["classified"], study["skipped"]) == (3, 2, 1)
    by_entry = {i["entry"]: i for i in body["images"]}
    assert by_entry["EXPORT/PAT1/STUDY1/SER3/CT1"]["reason"] == "modality CT is not a radiograph"
    assert by_entry["EXPORT/README.TXT"] == {"entry": "EXPORT/README.TXT", "state": "skipped",
                                             "reason": "not a DICOM file", "urls": {},
                                             "reason_code": "not_dicom",
                                             "reason_text": "not a DICOM file"}  # fmt: skip
    classified = [i for i in body["images"] if i["state"] == "classified"]
    probabilities = [i["fracture_probability"] for i in classified]
    assert study["fracture_probability"] == max(probabilities)
    uids = OutputUIDs(root=UID_ROOT, model_version=classifier.card.version)
    assert study["sr_sop_instance_uid"] == uids.instance(SR, expected["study_uid"])
    assert sorted(i["sc_sop_instance_uid"] for i in classified) == sorted(
        uids.instance(SC, u) for u in expected["sop_uids"])  # fmt: skip
    summary = study["summary"]
    assert summary["modalities"] == ["CR", "CT"] and "EXTREMITY" in summary["body_parts"]
    assert len(summary["series"]) == 3 and summary["manufacturers"]
    meta = classified[0]["metadata"]
    assert {"series_instance_uid", "manufacturer_model_name", "view_position",
            "pixel_spacing", "imager_pixel_spacing"} <= set(meta)  # fmt: skip
    for image in classified:
        check_overlay(client, image)
        sc = dcmread(io.BytesIO(client.get(image["urls"]["sc"]).content))
        assert sc.SOPInstanceUID == image["sc_sop_instance_uid"]
    sr = dcmread(io.BytesIO(client.get(study["urls"]["sr"]).content))
    assert sr.SOPInstanceUID == study["sr_sop_instance_uid"]

    report = client.get(body["urls"]["report"])
    assert report.status_code == 200 and "spreadsheetml" in report.headers["content-type"]
    workbook = load_workbook(io.BytesIO(report.content))
    assert workbook.sheetnames == ["Studies", "Images", "Model"]
    studies_sheet = list(workbook["Studies"].values)
    assert studies_sheet[1][0] == expected["study_uid"] and len(studies_sheet) == 2
    images_sheet = list(workbook["Images"].values)
    assert len(images_sheet) == 1 + 4
    header = images_sheet[0]
    rows = {r[0]: dict(zip(header, r, strict=True)) for r in images_sheet[1:]}
    first = rows["EXPORT/PAT1/STUDY1/SER1/IM000001"]
    assert first["State"] == "classified" and first["Modality"] == "CR"
    assert first["Fracture probability"] == pytest.approx(
        by_entry["EXPORT/PAT1/STUDY1/SER1/IM000001"]["fracture_probability"]
    )
    model_sheet = dict(list(workbook["Model"].values)[1:])
    assert model_sheet["UNTRAINED DEMO"].startswith("yes")

    [folder] = uploads_of(client)
    assert not [p for p in folder.iterdir() if p.name.startswith(".extract-")]  # temp removed


def test_zip_with_parent_directory_entries_is_refused(client, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("study/IM1.dcm", testdata(RG3_UNCR).read_bytes())
        zf.writestr("../../escaped.dcm", testdata(RG3_UNCR).read_bytes())
    response = post(client, buffer.getvalue(), "evil.zip", path="/api/analyze-study")
    assert response.status_code == 422 and response.json()["code"] == "zip_unsafe_path"
    data_dir = client.data_dir
    assert not any(p.name == "escaped.dcm" for p in tmp_path.rglob("*"))
    assert not (data_dir / "escaped.dcm").exists() and uploads_of(client) == []


def test_zip_with_an_absolute_entry_is_refused(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(zipfile.ZipInfo("/tmp/dicomnode-absolute.dcm"), b"x")
    response = post(client, buffer.getvalue(), path="/api/analyze-study")
    assert response.status_code == 422 and response.json()["code"] == "zip_unsafe_path"
    assert not Path("/tmp/dicomnode-absolute.dcm").exists()


def test_zip_bomb_is_refused(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("study/IM1.dcm", testdata(RG3_UNCR).read_bytes())
        zf.writestr("study/IM2.dcm", bytes(40 * 1024 * 1024))  # 40 MiB of zeros, ~40 KiB
    data = buffer.getvalue()
    assert len(data) < 4 * 1024 * 1024
    response = post(client, data, "bomb.zip", path="/api/analyze-study", params={"lang": "uk"})
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "zip_ratio" and "ZIP-бомба" in response.json()["detail"]
    assert uploads_of(client) == []


def test_zip_limits_on_entries_and_total_size(make_client):
    client = make_client(max_zip_entries=3, max_zip_uncompressed_mb=1)
    many = io.BytesIO()
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(4):
            zf.writestr(f"f{i}", b"x")
    response = post(client, many.getvalue(), path="/api/analyze-study")
    assert response.status_code == 413
    assert response.json()["detail"] == "The archive has 4 entries; at most 3 are accepted."
    large = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(large, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a", rng.bytes(700_000))
        zf.writestr("b", rng.bytes(700_000))
    response = post(client, large.getvalue(), path="/api/analyze-study")
    assert response.status_code == 413 and response.json()["code"] == "zip_too_large"
    assert uploads_of(client) == []


def test_zip_without_dicom_and_damaged_zip(client):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("notes.txt", b"nothing here")
    response = post(client, buffer.getvalue(), path="/api/analyze-study")
    assert response.status_code == 422 and response.json()["code"] == "zip_no_dicom"
    damaged = b"PK\x03\x04" + bytes(200)
    response = post(client, damaged, path="/api/analyze-study")
    assert response.status_code == 422 and response.json()["code"] == "zip_corrupt"


# --- auth, sending, downloads, retention ----------------------------------------------------------


def test_auth_is_the_worklist_pages(make_client):
    client = make_client(token=TOKEN)
    png = encoded("PNG")
    assert post(client, png).status_code == 401
    login = client.get("/analyze")
    assert login.status_code == 401 and 'name="next" value="/analyze"' in login.text
    body = post(client, png, headers=AUTH).json()
    assert client.get(body["urls"]["overlay"]).status_code == 401
    client.post("/login", data={"token": TOKEN, "next": "/analyze"})  # the session cookie
    assert client.get("/analyze").status_code == 200
    assert client.get(body["urls"]["overlay"]).status_code == 200
    page = {"Origin": "http://testserver"}  # the page posts with its cookie, from its origin
    assert post(client, png, headers=page).status_code == 200
    assert post(client, png).status_code == 403  # no origin: http/guard.py (test_web_guard.py)
    # Sending to the network needs the token itself.
    dicom = testdata(RG3_UNCR).read_bytes()
    response = post(client, dicom, params={"send": "true"}, headers=page)
    assert response.status_code == 403 and response.json()["code"] == "send_needs_token"
    response = post(client, dicom, params={"send": "true"}, headers=AUTH)
    assert response.status_code == 409 and response.json()["code"] == "send_no_destinations"


def test_send_only_for_dicom(make_client):
    client = make_client(destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                                        "port": 104}])  # fmt: skip
    response = post(client, encoded("PNG"), data={"send": "true"})
    assert response.status_code == 422 and response.json()["code"] == "send_needs_dicom"


def test_downloads_are_only_the_listed_result_files(client):
    body = post(client, testdata(RG3_UNCR).read_bytes()).json()
    base = body["urls"]["result"]
    for name in ("result.json", "upload.dcm", "..%2Fresult.json", ".hidden", "nothing.png"):
        assert client.get(f"{base}/files/{name}").status_code == 404, name
    assert client.get("/api/analyses/not-an-id/files/overlay.png").status_code == 404
    assert client.get("/api/analyses/../../etc/passwd").status_code == 404


def test_retention_removes_uploads_and_their_results(client):
    body = post(client, encoded("PNG")).json()
    [folder] = uploads_of(client)
    store = UploadStore(folder.parent)
    assert store.remove_expired(retention_hours=24) == 0  # fresh
    assert client.get(body["urls"]["overlay"]).status_code == 200
    mtime = folder.stat().st_mtime
    assert store.remove_expired(retention_hours=24, now=mtime + 24 * 3600 - 1) == 0
    assert store.remove_expired(retention_hours=0, now=mtime + 10 * 24 * 3600) == 0  # 0: keep
    assert store.remove_expired(retention_hours=24, now=mtime + 24 * 3600) == 1
    assert not folder.exists()
    gone = client.get(body["urls"]["result"], params={"lang": "uk"})
    assert gone.status_code == 404 and "Такого аналізу немає" in gone.json()["detail"]
    assert client.get(body["urls"]["overlay"]).status_code == 404


def test_pages_render_in_both_languages(client):
    analyze = client.get("/analyze", params={"lang": "uk"})
    assert analyze.status_code == 200 and 'lang="uk"' in analyze.text
    assert "Аналіз рентгенограми" in analyze.text and "не діагноз" in analyze.text
    assert 'id="untrained-banner"' in analyze.text
    about = client.get("/about-model", params={"lang": "en"})
    assert "UNTRAINED DEMO: this model has random weights" in about.text
    assert "demo-test_efficientnet-seed0" in about.text and "0.3" in about.text
    worklist = client.get("/")
    assert 'href="/analyze"' in worklist.text and 'href="/about-model"' in worklist.text
