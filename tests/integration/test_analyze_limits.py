"""HTTP uploads meet the admission a C-STORE meets, at the node's configured limits.

`/api/analyze`, `/api/analyze-study` and `/api/preview` classify uploads without spooling them,
so they used to skip the C-STORE admission (sequence depth, UID checks) and apply a fixed
1 GiB inflation limit instead of `node.max_dataset_mb`. Each check of the admission
(`ingest.limits`: dataset size, size once inflated, a broken deflate stream, an unreadable
dataset, nesting depth, SOP/Study/Series UIDs) is run here on an upload with a small configured
limit: it is refused with the status and reason the C-STORE admission (`store_bytes`) gives
the same bytes, nothing is kept, and the size checks let the same file through at the default.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomnode.audit import Audit
from dicomnode.config import Settings
from dicomnode.imaging import preprocess
from dicomnode.imaging.reasons import reason_code
from dicomnode.ingest.admission import StoreContext, StoreStatus, store_bytes
from dicomnode.ingest.limits import MAX_SEQUENCE_DEPTH
from dicomnode.ingest.scp import start_scp
from dicomnode.metrics import Metrics
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from tests.integration import test_analyze_api as analyze_api
from tests.integration.test_analyze_api import post, uploads_of
from tests.reliability.malformed import CR_CLASS, file_with
from tests.support.data import RG3_UNCR, new_uid, testdata
from tests.support.dcmtk import storescu
from tests.support.peers import free_port
from tests.support.procs import wait_until

classifier = analyze_api.classifier
make_client = analyze_api.make_client
#: The hostile UIDs are the point; pydicom warns each time it reads one.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

LIMIT_MB = 1
MIB = 1024 * 1024


def _radiograph(key: str) -> Dataset:
    """RG3 (CR) at a quarter of its size (440x535, ~0.5 MiB of pixels), with its own UIDs."""
    ds = pydicom.dcmread(testdata(RG3_UNCR))
    ds.PixelData = ds.pixel_array[::4, ::4].copy().tobytes()
    ds.Rows, ds.Columns = ds.Rows // 4, ds.Columns // 4
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = new_uid("limits", key)
    ds.StudyInstanceUID = new_uid("limits-study", key)
    return ds


def _encoded(ds: Dataset, *, deflated: bool = False) -> bytes:
    if deflated:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _nested(depth: int) -> Sequence:
    item = Dataset()
    item.CodeValue = "1"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ReferencedSeriesSequence = Sequence([item])
        item = outer
    return Sequence([item])


def _too_large() -> bytes:
    """A radiograph of ~2 MiB on disk (a zero-filled private element: padding)."""
    ds = _radiograph("too-large")
    ds.add_new(0x00091010, "OB", bytes(2 * MIB))
    return _encoded(ds)


def _inflates_too_large() -> bytes:
    """The same, deflated: a few hundred KiB that inflate past 1 MiB."""
    ds = _radiograph("inflates")
    ds.add_new(0x00091010, "OB", bytes(2 * MIB))
    data = _encoded(ds, deflated=True)
    assert len(data) < LIMIT_MB * MIB
    return data


def _broken_deflate() -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_CLASS
    meta.MediaStorageSOPInstanceUID = new_uid("limits", "broken")
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return file_with(meta, b"\x78\x9c not a deflate stream")


def _with(key: str, **attrs: object) -> Callable[[], bytes]:
    def build() -> bytes:
        ds = _radiograph(key)
        with pydicom.config.disable_value_validation():  # invalid UIDs, on purpose
            for keyword, value in attrs.items():
                setattr(ds, keyword, value)
            return _encoded(ds)

    return build


#: (check, upload, refused at the default limit too)
NESTED = _nested(MAX_SEQUENCE_DEPTH + 2)
CHECKS = [
    ("dataset size", _too_large, False),
    ("size once inflated", _inflates_too_large, False),
    ("deflate stream", _broken_deflate, True),
    ("nesting depth", _with("nested", ReferencedImageSequence=NESTED), True),
    ("SOP Instance UID", _with("sop", SOPInstanceUID="1.2.abc"), True),
    ("Study Instance UID", _with("study", StudyInstanceUID="not-a-uid"), True),
    ("Series Instance UID", _with("series", SeriesInstanceUID="1..2"), True),
]


def _admission(tmp_path: Path, data: bytes, *, limit_mb: int) -> tuple[StoreStatus, str]:
    """What the C-STORE admission answers for `data` (store_bytes, as the SCP and STOW-RS)."""
    folder = tmp_path / f"cstore-{limit_mb}"
    node = {"data_dir": str(folder), "max_dataset_mb": limit_mb, "min_free_mb": 0}
    settings = Settings.model_validate({"node": node})
    engine = make_engine(f"sqlite:///{folder / 'db.sqlite'}")
    try:
        ctx = StoreContext(spool=Spool(folder / "spool"), jobs=Jobs(engine), metrics=Metrics(),
                           salt="s", max_dataset_bytes=settings.node.max_dataset_bytes)  # fmt: skip
        return store_bytes(ctx, data, calling="TEST")
    finally:
        engine.dispose()


@pytest.mark.parametrize(("check", "build", "always"), CHECKS, ids=[c[0] for c in CHECKS])
@pytest.mark.parametrize("path", ["/api/analyze", "/api/analyze-study", "/api/preview"])
def test_every_admission_check_applies_to_uploads_at_the_configured_limit(
    make_client, tmp_path, check, build, always, path
) -> None:
    data = build()
    status, reason = _admission(tmp_path, data, limit_mb=LIMIT_MB)
    assert status != StoreStatus.SUCCESS, check  # the C-STORE admission refuses it
    assert reason_code(reason) is not None, reason  # a coded reason the pages translate
    payload = _zip(data) if path == "/api/analyze-study" else data
    client = make_client(node={"max_dataset_mb": LIMIT_MB})
    answer = post(client, payload, "upload.dcm", path=path)
    assert answer.status_code == (413 if status == StoreStatus.OUT_OF_RESOURCES else 422), (
        answer.text
    )
    body = answer.json()
    assert body["code"] == ("preview_unavailable" if path == "/api/preview" else "file_refused")
    assert (body["reason"], body["reason_code"]) == (reason, reason_code(reason))
    assert reason in body["detail"]
    assert uploads_of(client) == []  # nothing kept

    default = make_client()
    status_default, _ = _admission(tmp_path, data, limit_mb=Settings().node.max_dataset_mb)
    accepted = post(default, payload, "upload.dcm", path=path)
    if always:
        assert accepted.status_code == answer.status_code == 422
        assert accepted.json()["reason"] == reason
    else:  # the same file is within the default limit: analysed (or previewed) as usual
        assert status_default == StoreStatus.SUCCESS
        assert accepted.status_code == 200, accepted.text


def _zip(member: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("study/image.dcm", member)
    return buffer.getvalue()


def test_a_zip_keeps_the_admitted_images_and_names_the_refused_one(make_client) -> None:
    client = make_client(node={"max_dataset_mb": LIMIT_MB})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("study/big.dcm", _too_large())
        archive.writestr("study/ok.dcm", _encoded(_radiograph("zip-ok")))
    answer = post(client, buffer.getvalue(), "study.zip", path="/api/analyze-study")
    assert answer.status_code == 200, answer.text
    images = {i["entry"]: i for i in answer.json()["images"]}
    assert images["study/ok.dcm"]["state"] == "classified"
    assert images["study/big.dcm"]["reason"] == "dataset larger than max_dataset_mb"
    assert images["study/big.dcm"]["reason_code"] == "dataset_too_large"


def _tiff() -> bytes:
    """RG3 as a 16-bit deflate-compressed TIFF: ~7 MiB of pixels once decoded."""
    pixels = preprocess.to_grayscale(pydicom.dcmread(testdata(RG3_UNCR)))
    picture = Image.fromarray(np.round(pixels * 65535).astype(np.uint16))
    buffer = io.BytesIO()
    picture.save(buffer, format="TIFF", compression="tiff_adobe_deflate")
    return buffer.getvalue()


@pytest.mark.parametrize("path", ["/api/analyze", "/api/preview"])
def test_a_picture_may_not_decode_past_the_configured_limit(make_client, path) -> None:
    tiff = _tiff()
    limit_mb = 4
    assert len(tiff) < limit_mb * MIB  # the file is within the limit, its pixels are not
    client = make_client(node={"max_dataset_mb": limit_mb})
    answer = post(client, tiff, "image.tiff", path=path)
    assert answer.status_code == 413, answer.text
    assert answer.json()["reason"] == "decoded image larger than max_dataset_mb"
    assert answer.json()["reason_code"] == "decoded_too_large"
    assert uploads_of(client) == []
    assert post(make_client(), tiff, "image.tiff", path=path).status_code == 200


def test_deep_nesting_is_refused_by_upload_as_by_c_store(make_client, tmp_path) -> None:
    """The same file by a real C-STORE (dcmtk storescu to the node's SCP) and by upload:
    0xC000 / 422, with the same reason and reason code."""
    ds = _radiograph("nested-cstore")
    ds.ReferencedImageSequence = _nested(MAX_SEQUENCE_DEPTH + 2)
    path = tmp_path / "nested.dcm"
    ds.save_as(path, enforce_file_format=True)

    settings = Settings.model_validate({"node": {"port": free_port(), "min_free_mb": 0,
                                                 "data_dir": str(tmp_path / "node")}})  # fmt: skip
    engine = make_engine(settings.database_url)
    audit = Audit(engine, salt="s")
    server = start_scp(settings.node, StoreContext(
        spool=Spool(tmp_path / "node" / "spool"), jobs=Jobs(engine), metrics=Metrics(),
        salt="s", audit=audit, max_dataset_bytes=settings.node.max_dataset_bytes,
    ))  # fmt: skip
    try:
        sent = storescu([path], port=settings.node.port, called=settings.node.ae_title)
        details = wait_until(lambda: [e.detail for e in audit.query() if "refused" in e.detail],
                             timeout=30, what="the refusal in the audit trail")  # fmt: skip
    finally:
        server.shutdown()
        engine.dispose()
    assert sent.statuses == [StoreStatus.CANNOT_UNDERSTAND], sent.stderr[-2000:]
    assert details == ["refused 0xC000: sequences nested too deeply"]
    c_store_reason = details[0].split(": ", 1)[1]

    client = make_client()
    answer = post(client, path.read_bytes(), "nested.dcm")
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["reason"] == c_store_reason
    assert body["reason_code"] == reason_code(c_store_reason) == "nested_too_deeply"
    assert uploads_of(client) == []
