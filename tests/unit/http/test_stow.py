"""STOW-RS receive (POST /dicomweb/studies[/{study}]) on the real app, admission, spool and
SQLite: what the response says is exactly what is stored and queued, and bad bodies get the
codes of PS3.18 10.5.3 and store nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.support.api_client import TOKEN, StowApi, stow_api
from tests.support.data import RG3_UNCR, copy_with_new_uids, new_uid, testdata
from tests.support.inprocess import serve_app
from tests.support.procs import wait_until
from tests.support.smallcr import small_cr

BOUNDARY = "b0undary-7d1f"
CONTENT_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
# DICOM JSON tags of the Store Instances Response (PS3.18 Annex I).
REFERENCED, FAILED = "00081199", "00081198"
SOP_INSTANCE, FAILURE_REASON = "00081155", "00081197"


class Stow(StowApi):
    def post(self, parts: list[bytes], *, study: str | None = None, **kwargs: Any) -> Any:
        url = "/dicomweb/studies" + (f"/{study}" if study else "")
        headers = {"Content-Type": CONTENT_TYPE, **kwargs.pop("headers", {})}
        return self.client.post(url, content=multipart(parts), headers=headers, **kwargs)


def multipart(
    parts: list[bytes], *, boundary: str = BOUNDARY, media: str = "application/dicom"
) -> bytes:
    body = b"".join(f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode() + p + b"\r\n"
                    for p in parts)  # fmt: skip
    return body + f"--{boundary}--\r\n".encode()


@pytest.fixture
def stow(tmp_path: Path) -> Iterator[Stow]:
    with stow_api(tmp_path, max_dataset_bytes=1024 * 1024) as api:
        yield Stow(api.app, api.client, api.jobs, api.spool, api.audit)


def _cr(tmp_path: Path, name: str, study: str, **attrs: object) -> bytes:
    return small_cr(tmp_path / f"{name}.dcm", study_uid=study, **attrs).read_bytes()


def _sop(data: bytes) -> str:
    from io import BytesIO

    return str(pydicom.dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


def _uids(body: dict, key: str) -> list[str]:
    return [item[SOP_INSTANCE]["Value"][0] for item in body.get(key, {}).get("Value", [])
            if SOP_INSTANCE in item]  # fmt: skip


def _reasons(body: dict) -> list[int]:
    return [item[FAILURE_REASON]["Value"][0] for item in body.get(FAILED, {}).get("Value", [])]


def test_a_study_is_stored_and_queued_before_200(stow: Stow, tmp_path: Path) -> None:
    study = new_uid("stow ok")
    parts = [_cr(tmp_path, "a", study), _cr(tmp_path, "b", study)]
    response = stow.post(parts, study=study)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    body = response.json()
    assert sorted(_uids(body, REFERENCED)) == sorted(_sop(p) for p in parts)
    assert FAILED not in body
    for part in parts:
        assert stow.jobs.exists(_sop(part))
    assert len(stow.stored()) == 2
    # Sent again: success, no second job or file (the same duplicate rule as a C-STORE).
    again = stow.post(parts)
    assert again.status_code == 200 and len(stow.stored()) == 2
    rows = stow.audit.query(limit=50)
    assert any(r.count == 2 and r.outcome == 0 and r.actor == "STOW-RS" for r in rows)


def test_an_instance_of_another_study_than_the_url_fails_alone(stow: Stow, tmp_path: Path) -> None:
    study, other = new_uid("stow url study"), new_uid("stow other study")
    mine, theirs = _cr(tmp_path, "mine", study), _cr(tmp_path, "theirs", other)
    response = stow.post([mine, theirs], study=study)
    assert response.status_code == 202, response.text
    body = response.json()
    assert _uids(body, REFERENCED) == [_sop(mine)]
    assert _uids(body, FAILED) == [_sop(theirs)] and _reasons(body) == [0xA900]
    assert not stow.jobs.exists(_sop(theirs))
    # Only instances of another study: none stored, 409.
    alone = stow.post([_cr(tmp_path, "theirs2", other)], study=study)
    assert alone.status_code == 409 and _reasons(alone.json()) == [0xA900]
    assert len(stow.stored()) == 1


def test_a_part_that_is_not_dicom_fails_with_cannot_understand(stow: Stow) -> None:
    response = stow.post([b"%PDF-1.7 not a DICOM file" * 10])
    assert response.status_code == 409, response.text
    assert _reasons(response.json()) == [0xC000]
    text_part = stow.client.post("/dicomweb/studies", headers={"Content-Type": CONTENT_TYPE},
                                 content=multipart([b"hello"], media="text/plain"))  # fmt: skip
    assert text_part.status_code == 409 and _reasons(text_part.json()) == [0xC000]
    assert stow.stored() == []


def test_a_part_over_the_size_limit_is_413_and_the_rest_of_the_body_is_read(
    stow: Stow, tmp_path: Path
) -> None:
    study = new_uid("stow big")
    big = copy_with_new_uids(testdata(RG3_UNCR), tmp_path / "big.dcm", study_uid=study).read_bytes()
    assert len(big) > 1024 * 1024  # the fixture's max_dataset_bytes
    response = stow.post([big])
    assert response.status_code == 413, response.text
    assert _uids(response.json(), FAILED) == [_sop(big)]  # named from its first bytes
    assert _reasons(response.json()) == [0xA700]
    small = _cr(tmp_path, "small", study)
    mixed = stow.post([big, small])
    assert mixed.status_code == 202 and _uids(mixed.json(), REFERENCED) == [_sop(small)]
    assert len(stow.stored()) == 1 and not stow.jobs.exists(_sop(big))


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        (CONTENT_TYPE.replace(BOUNDARY, "another-boundary"), None, 400),
        ('multipart/related; type="application/dicom"', None, 400),  # no boundary
        (
            CONTENT_TYPE,
            b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\nDI",
            400,
        ),
        (CONTENT_TYPE, f"--{BOUNDARY}--\r\n".encode(), 400),  # no instance
        ("application/dicom", None, 415),
        ('multipart/related; type="application/dicom+json"; boundary=x', None, 415),
        ("multipart/form-data; boundary=" + BOUNDARY, None, 415),
    ],
)
def test_broken_requests_get_the_standards_codes_and_store_nothing(
    stow: Stow, tmp_path: Path, content_type: str, body: bytes | None, code: int
) -> None:
    content = body if body is not None else multipart([_cr(tmp_path, "x", new_uid("broken"))])
    response = stow.client.post("/dicomweb/studies", content=content,
                                headers={"Content-Type": content_type})  # fmt: skip
    assert response.status_code == code, response.text
    assert stow.stored() == [] and not stow.jobs.list_jobs()


def test_without_the_token_nothing_is_read_or_stored(stow: Stow, tmp_path: Path) -> None:
    part = _cr(tmp_path, "anon", new_uid("anon"))
    response = stow.post([part], headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert stow.stored() == [] and not stow.jobs.exists(_sop(part))
    assert any("bearer token refused" in r.detail for r in stow.audit.query(limit=10))


def test_a_client_that_only_accepts_xml_gets_406(stow: Stow, tmp_path: Path) -> None:
    part = _cr(tmp_path, "xml", new_uid("xml"))
    response = stow.post([part], headers={"Accept": "application/dicom+xml"})
    assert response.status_code == 406 and stow.stored() == []


def test_logs_and_audit_name_no_patient_and_no_raw_uid(
    stow: Stow, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    study, other = new_uid("stow phi"), new_uid("stow phi other")
    patient = {"PatientName": "Canary^Stow", "PatientID": "CANARY-42"}
    parts = [_cr(tmp_path, "p1", study, **patient), _cr(tmp_path, "p2", other, **patient)]
    assert stow.post(parts, study=study).status_code == 202
    rows = stow.audit.query(limit=50)
    assert {r.actor for r in rows} == {"STOW-RS"} and all(r.peer for r in rows)
    written = capsys.readouterr().out + "\n".join(
        f"{r.detail} {r.object} {r.study} {r.peer}" for r in rows
    )
    for secret in ("Canary", "CANARY-42", study, other, *(_sop(p) for p in parts)):
        assert secret not in written


def test_requests_beyond_max_associations_are_busy_503_until_one_ends(tmp_path: Path) -> None:
    """Each request holds up to one dataset in memory, so at most node.max_associations are
    received at once (like associations); more are told to come back (PS3.18: 503)."""
    part = _cr(tmp_path, "slow", new_uid("stow busy"))
    release = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        release.wait(30)
        yield part + f"\r\n--{BOUNDARY}--\r\n".encode()

    headers = {"Content-Type": CONTENT_TYPE, "Authorization": f"Bearer {TOKEN}"}
    with stow_api(tmp_path / "node", max_associations=1) as api, serve_app(api.app) as url:
        answers: list[httpx.Response] = []

        def send_slowly() -> None:
            answers.append(httpx.post(f"{url}/dicomweb/studies", content=slow_body(),
                                      headers=headers))  # fmt: skip

        first = threading.Thread(target=send_slowly)
        first.start()
        try:
            wait_until(lambda: api.app.state.stow_slots.busy == 1, timeout=20,
                       what="the first request to be received")  # fmt: skip
            busy = httpx.post(f"{url}/dicomweb/studies", content=multipart([part]),
                              headers=headers)  # fmt: skip
            assert busy.status_code == 503 and busy.headers["retry-after"]
        finally:
            release.set()
            first.join(timeout=30)
        assert [a.status_code for a in answers] == [200]
        assert len(api.stored()) == 1
        again = httpx.post(f"{url}/dicomweb/studies", content=multipart([part]), headers=headers)
        assert again.status_code == 200  # the slot was given back


def test_a_deflate_bomb_part_is_refused_while_it_inflates(stow: Stow) -> None:
    """A few hundred kB that inflate past node.max_dataset_mb: refused by the same admission
    as a C-STORE (0xA700), never inflated whole."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from tests.reliability.malformed import CR_CLASS, deflate_bomb, file_with

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_CLASS
    meta.MediaStorageSOPInstanceUID = new_uid("stow bomb")
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    bomb = file_with(meta, deflate_bomb(64))  # ~64 kB on the wire, 64 MiB inflated
    assert len(bomb) < 1024 * 1024
    response = stow.post([bomb])
    assert response.status_code == 409 and _reasons(response.json()) == [0xA700]
    assert stow.stored() == [] and not stow.jobs.list_jobs()
