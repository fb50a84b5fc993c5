"""Every way in refuses a deflate bomb while it inflates: `store_bytes` (the Orthanc pull,
uploads, a deflated C-STORE) counts a deflated dataset in bounded chunks before pydicom, which
would inflate it in one piece, ever sees it."""

from __future__ import annotations

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomnode.config import Settings
from dicomnode.ingest.admission import StoreContext, StoreStatus, store_bytes
from dicomnode.metrics import Metrics
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from tests.reliability.malformed import CR_CLASS, deflate_bomb, file_with
from tests.support import data


@pytest.fixture
def ctx(tmp_path) -> StoreContext:
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path)}})
    jobs = Jobs(make_engine(settings.database_url))
    return StoreContext(spool=Spool(tmp_path / "spool"), jobs=jobs, metrics=Metrics(), salt="s",
                        max_dataset_bytes=8 * 1024 * 1024)  # fmt: skip


def _deflated_file(body: bytes) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_CLASS
    meta.MediaStorageSOPInstanceUID = data.new_uid("inflation", body[:16].hex())
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return file_with(meta, body)


def test_a_deflate_bomb_is_refused_while_it_inflates(ctx: StoreContext) -> None:
    bomb = _deflated_file(deflate_bomb(600))  # ~600 KiB that inflate to 600 MiB
    status, reason = store_bytes(ctx, bomb, calling="ORTHANC-PULL")
    assert (status, reason) == (StoreStatus.OUT_OF_RESOURCES,
                                "inflated dataset larger than max_dataset_mb")  # fmt: skip
    assert ctx.jobs.list_jobs() == [] and not list(ctx.spool.root.rglob("*.dcm"))


def test_a_broken_deflate_stream_cannot_be_understood(ctx: StoreContext) -> None:
    status, _ = store_bytes(ctx, _deflated_file(b"\x78\x9c garbage"), calling="UPLOAD")
    assert status == StoreStatus.CANNOT_UNDERSTAND


def test_a_deflated_radiograph_within_the_limit_is_stored(ctx: StoreContext, tmp_path) -> None:
    import pydicom

    source = pydicom.dcmread(data.copy_with_new_uids(data.testdata(data.RG3_UNCR),
                                                     tmp_path / "in.dcm"))  # fmt: skip
    source.PixelData = source.pixel_array[::4, ::4].copy().tobytes()
    source.Rows, source.Columns = source.Rows // 4, source.Columns // 4
    source.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    source.save_as(path, enforce_file_format=True)
    # The file really is deflated: far smaller than its pixels.
    assert path.stat().st_size < source.Rows * source.Columns * 2
    status, _ = store_bytes(ctx, path.read_bytes(), calling="UPLOAD")
    assert status == StoreStatus.SUCCESS and len(ctx.jobs.list_jobs()) == 1
