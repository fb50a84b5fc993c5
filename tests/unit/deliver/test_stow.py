"""The STOW-RS sender (dicomweb-client) against the node's own STOW-RS endpoint on a loopback
port: each instance's outcome is read from the peer's Store Instances Response, and a peer that
refuses, is down or rejects the credentials gives failed outcomes (never an exception), which
the outbox retries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomnode.deliver.stow import send_stow
from dicomnode.destinations import DicomwebDestination
from tests.support.api_client import TOKEN, StowApi, stow_api
from tests.support.data import new_uid
from tests.support.inprocess import serve_app
from tests.support.procs import free_port
from tests.support.smallcr import small_cr


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[tuple[StowApi, str]]:
    """A STOW-RS peer (the node's API) taking datasets up to 100 kB; (its parts, base URL)."""
    with stow_api(tmp_path / "peer", max_dataset_bytes=100_000) as api, serve_app(api.app) as url:
        yield api, f"{url}/dicomweb"


def _destination(url: str, token: str = TOKEN) -> DicomwebDestination:
    return DicomwebDestination(type="dicomweb", name="peer", url=url, auth="bearer",
                               token=token)  # type: ignore[arg-type]  # fmt: skip


def _files(tmp_path: Path, study: str, *, big: int = 0, small: int = 0) -> list[Path]:
    """`big` radiographs (about 170 kB: over the peer's limit) and `small` ones (cropped)."""
    folder = tmp_path / study
    files = [small_cr(folder / f"big{n}.dcm", study_uid=study) for n in range(big)]
    for n in range(small):
        path = small_cr(folder / f"small{n}.dcm", study_uid=study)
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array[:32, :32].copy()
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def _sop(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_instances_of_two_studies_are_stored_at_the_peer(peer, tmp_path: Path) -> None:
    api, url = peer
    files = _files(tmp_path, new_uid("stow a"), small=2) + _files(tmp_path, new_uid("b"), small=1)
    outcomes = send_stow(files, destination=_destination(url), timeout=10)
    assert sorted(o.path for o in outcomes) == sorted(files)
    assert all(o.ok and o.status == 0 and o.answered_at is not None for o in outcomes)
    assert all(api.jobs.exists(_sop(f)) for f in files)


def test_what_the_peer_refuses_fails_per_instance_with_its_failure_reason(
    peer, tmp_path: Path
) -> None:
    api, url = peer
    study = new_uid("stow refused")
    big, small = _files(tmp_path, study, big=1), _files(tmp_path, study, small=1)
    partly = {o.path: o for o in send_stow(big + small, destination=_destination(url))}
    assert partly[small[0]].ok  # 202: stored
    assert not partly[big[0]].ok and partly[big[0]].status == 0xA700
    [alone] = send_stow(big, destination=_destination(url))  # 413: none stored
    assert not alone.ok and alone.status == 0xA700 and "0xA700" in (alone.error or "")
    assert not api.jobs.exists(_sop(big[0]))


def test_wrong_credentials_and_a_peer_that_is_down_are_failed_outcomes(
    peer, tmp_path: Path
) -> None:
    api, url = peer
    files = _files(tmp_path, new_uid("stow 401"), small=1)
    [refused] = send_stow(files, destination=_destination(url, token="wrong"))
    assert not refused.ok and refused.status is None and "HTTP 401" in (refused.error or "")
    down = f"http://127.0.0.1:{free_port()}/dicomweb"
    [unreachable] = send_stow(files, destination=_destination(down), timeout=5)
    assert not unreachable.ok and "STOW-RS failed" in (unreachable.error or "")
    assert api.stored() == []


def test_the_doctor_check_tells_reachable_refused_and_down_apart(peer) -> None:
    from dicomnode.checks import check_destinations
    from dicomnode.config import Settings

    _, url = peer
    down = f"http://127.0.0.1:{free_port()}/dicomweb"
    settings = Settings.model_validate({"destinations": [
        {"type": "dicomweb", "name": n, "url": u, "auth": "bearer", "token": t}
        for n, u, t in (("ok", url, TOKEN), ("refused", url, "wrong"), ("down", down, TOKEN))
    ]})  # fmt: skip
    checks = {c.name: c for c in check_destinations(settings)}
    assert checks["destination ok"].status == "ok"
    assert checks["destination refused"].status == "warn"
    assert "credentials refused" in checks["destination refused"].message
    assert "not reachable" in checks["destination down"].message
    assert TOKEN not in " ".join(c.message for c in checks.values())
