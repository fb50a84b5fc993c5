"""The one owner of "spool file + result row + deliveries": how an object the node made is
queued for every destination, and the source headers kept for the study report.

The worker pipeline stores what it builds; HTTP analysis with `send=true` queues the files it
wrote (the same objects, the same UIDs). Delivery itself is the outbox's (`deliver.outbox`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from io import BytesIO
from pathlib import Path

from pydicom import Dataset, dcmread

from dicomnode.config import Destination, DicomwebDestination
from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.imaging.regions import Region, regions_from_json, regions_to_json
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import REGIONS_SUFFIX, Spool
from dicomnode.store.tables import Result, ResultKind


def destinations_taking(
    destinations: Iterable[Destination | DicomwebDestination], kind: str
) -> list[str]:
    """The destinations an object of `kind` is queued for: those whose `objects` name it."""
    return [d.name for d in destinations if kind in d.objects]


def store_result(
    ds: Dataset,
    *,
    spool: Spool,
    jobs: Jobs,
    kind: ResultKind,
    destinations: Iterable[str],
    job_id: int | None,
    version: int,
) -> Result:
    """Write `ds` to the spool (replacing an earlier copy) and queue it. Raises OSError when
    it cannot be written: results respect min_free_mb as receiving does."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    uid = str(ds.SOPInstanceUID)
    relative = spool.relative_path(uid, kind="out")
    spool.check_space(buffer.getbuffer().nbytes)
    spool.write_bytes(relative, buffer.getbuffer())
    return jobs.add_result(kind=kind, sop_instance_uid=uid,
                           study_instance_uid=str(ds.StudyInstanceUID), path=relative,
                           destinations=destinations, job_id=job_id, version=version)  # fmt: skip


def queue_file(
    path: Path, *, spool: Spool, jobs: Jobs, kind: ResultKind, destinations: Iterable[str]
) -> Result:
    """Queue an object already written to `path` (an upload's analysis). Idempotent by SOP
    Instance UID: an object the node already made (the same UID, since both derive it from the
    source) is not overwritten, only queued for destinations it has not been queued for."""
    ds = dcmread(path, stop_before_pixels=True)
    uid = str(ds.SOPInstanceUID)
    relative = spool.relative_path(uid, kind="out")
    if not spool.exists(relative):
        spool.write_bytes(relative, path.read_bytes())
    return jobs.add_result(kind=kind, sop_instance_uid=uid,
                           study_instance_uid=str(ds.StudyInstanceUID), path=relative,
                           destinations=destinations, job_id=None,
                           version=int(ds.get("InstanceNumber") or 1))  # fmt: skip


def read_result(spool: Spool, sop_instance_uid: str) -> Dataset | None:
    """The header of an object the node made (a previous report version), if readable."""
    path = spool.path(spool.relative_path(sop_instance_uid, kind="out"))
    try:
        return dcmread(path, stop_before_pixels=True)
    except (FileNotFoundError, *READ_ERRORS):
        return None


def write_header(ds: Dataset, *, spool: Spool, regions: Sequence[Region] = ()) -> None:
    """Keep the source's header (no pixels): the SR needs it after the image is deleted.
    So it needs the image's suspected regions (the heatmap is gone by then): kept next to it
    (`regions_path`), when there are any.
    An element pydicom cannot decode (e.g. a damaged VR) is left out, as the outputs
    leave it out (`sources.output_header`): it must not fail an image already classified."""
    header = Dataset()
    for tag in list(ds.keys()):  # tags: iterating a Dataset decodes every element
        # Command (0000) and file meta (0002) elements have no place in a dataset body: a
        # sender's stray one made the writer raise and the job crash.
        if tag >= 0x7FE00010 or tag.group < 0x0008:
            continue
        try:
            header.add(ds[tag])
        except READ_ERRORS:
            continue
    header.file_meta = ds.file_meta
    buffer = BytesIO()
    header.save_as(buffer, enforce_file_format=False)
    relative = spool.relative_path(str(ds.SOPInstanceUID), kind="hdr")
    spool.check_space(buffer.getbuffer().nbytes)
    spool.write_bytes(relative, buffer.getbuffer())
    if regions:
        _write_regions(str(ds.SOPInstanceUID), regions, spool=spool)


def regions_path(spool: Spool, sop_instance_uid: str) -> str:
    """Where an image's suspected regions are kept, next to its header (retention deletes both
    with the records)."""
    return spool.relative_path(sop_instance_uid, kind="hdr", suffix=REGIONS_SUFFIX)


def _write_regions(sop_instance_uid: str, regions: Sequence[Region], *, spool: Spool) -> None:
    data = json.dumps({"regions": regions_to_json(regions)}).encode()
    relative = regions_path(spool, sop_instance_uid)
    spool.check_space(len(data))
    spool.write_bytes(relative, data)


def read_regions(spool: Spool, sop_instance_uid: str) -> tuple[Region, ...]:
    """The regions `write_header` kept; none when there are none or they cannot be read
    (the report is then made without them rather than not at all)."""
    try:
        data = json.loads(spool.path(regions_path(spool, sop_instance_uid)).read_bytes())
        return regions_from_json(data["regions"])
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def read_header(spool: Spool, sop_instance_uid: str) -> Dataset | None:
    relative = spool.relative_path(sop_instance_uid, kind="hdr")
    try:
        return dcmread(spool.path(relative), force=True)
    except (FileNotFoundError, *READ_ERRORS):
        return None
