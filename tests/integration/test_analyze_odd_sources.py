"""POST /api/analyze with valid but unusual DICOM and when the node itself fails: always the
documented `{"detail", "code"}` JSON answer, never a plain-text 500 (issue 17 item 3)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread

from dicomnode.uploads.store import UPLOADS_DIR
from tests.integration import test_analyze_api as analyze_api
from tests.integration.test_analyze_api import post, uploads_of
from tests.support.data import RG3_UNCR, testdata
from tests.support.validators import dciodvfy

# The analysis API's own fixtures (tiny demo model, a fresh data folder per client).
classifier = analyze_api.classifier
make_client = analyze_api.make_client
client = analyze_api.client


def _dicom(**attrs: Any) -> bytes:
    ds = dcmread(testdata(RG3_UNCR))
    for keyword, value in attrs.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("extension", ["ISO 2022 IR 87", "ISO 2022 IR 149"])
def test_iso_2022_upload_is_classified_with_valid_outputs(client, tmp_path, extension):
    name = "Yamada^Tarou=山田^太郎" if extension.endswith("87") else "Hong^Gildong=洪^吉洞"
    data = _dicom(SpecificCharacterSet=["", extension], PatientName=name)
    response = post(client, data, "image.dcm")  # was: ValueError, plain-text 500
    assert response.status_code == 200, response.text
    body = response.json()
    for kind in ("sc", "sr"):
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(client.get(body["urls"][kind]).content)
        assert dciodvfy(path) == [], kind
        assert str(dcmread(path).PatientName) == name


def test_a_dicom_whose_outputs_cannot_be_built_is_explained(client):
    response = post(client, _dicom(SeriesInstanceUID=None), "image.dcm")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "dicom_unreadable"
    assert "source image has no Series Instance UID" in response.json()["detail"]
    assert uploads_of(client) == []


@pytest.mark.parametrize("path", ["/api/analyze", "/api/analyze-study"])
def test_an_internal_failure_is_the_documented_json_error(client, path):
    """The uploads folder cannot be created (a file is in its place): the node's fault, still
    answered with the documented body and code."""
    (client.data_dir / UPLOADS_DIR).parent.mkdir(parents=True, exist_ok=True)
    (client.data_dir / UPLOADS_DIR).write_bytes(b"not a folder")
    quiet = TestClient(client.app, raise_server_exceptions=False)
    data = _dicom() if path == "/api/analyze" else _zip(_dicom())
    response = post(quiet, data, "upload", path=path)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == "internal_error" and "internal error" in body["detail"]


def _zip(member: bytes) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/image.dcm", member)
    return buffer.getvalue()
