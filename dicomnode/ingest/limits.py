"""What admission refuses before anything is kept: the policy's checks on a received file.

Every way in (C-STORE, STOW-RS, the Orthanc pull, HTTP uploads) applies them, through
`dicomnode.ingest.admission`: the size limit `node.max_dataset_mb` (a deflated dataset counted
while it inflates, in bounded chunks, before pydicom inflates it in one piece), a dataset that
cannot be read, sequences nested deeper than `MAX_SEQUENCE_DEPTH`, SOP Class/Instance UIDs that
are no UIDs, and a dataset that does not match its request (SOP identifiers, the study a
STOW-RS URL names, Study/Series Instance UIDs). Each check gives the DIMSE status and the
English reason (`imaging.reasons` codes them for the pages).
"""

from __future__ import annotations

import zlib
from enum import IntEnum
from io import BytesIO
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.tag import Tag
from pydicom.uid import UID

from dicomnode.imaging.dicom_errors import RECEIVED_ERRORS


class StoreStatus(IntEnum):
    """The C-STORE response statuses the node answers, whichever way a dataset came in."""

    SUCCESS = 0x0000
    OUT_OF_RESOURCES = 0xA700
    DATASET_MISMATCH = 0xA900
    CANNOT_UNDERSTAND = 0xC000


#: A refusal: the status answered and its reason (English; `imaging.reasons` codes it).
Refusal = tuple[StoreStatus, str]


def looks_like_uid(value: object) -> bool:
    """Tolerant UID check for received identifiers: digits and dots, 1–64 characters."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isdigit() or c == "." for c in value)
        and not value.startswith(".")
        and ".." not in value
    )


#: What pydicom raises on a dataset it cannot read.
DECODE_ERRORS = RECEIVED_ERRORS  # what a received dataset may raise (dicom_errors)


_INFLATE_CHUNK = 1024 * 1024  # output per step
_INFLATE_INPUT = 64 * 1024  # compressed input per step


def oversized(received: memoryview, *, deflated: bool, limit: int) -> Refusal | None:
    """Refuse a dataset above `limit` bytes (0: no limit), counting a deflated one as it inflates.

    pydicom inflates a deflated dataset in one piece, so a few kilobytes on the wire could
    claim gigabytes of memory; here the stream is inflated in bounded chunks and discarded,
    stopping as soon as the limit is passed.
    """
    if not limit:
        return None
    if received.nbytes > limit:
        return StoreStatus.OUT_OF_RESOURCES, "dataset larger than max_dataset_mb"
    if not deflated:
        return None
    try:
        total = _inflated_size(received, limit)
    except zlib.error:
        return StoreStatus.CANNOT_UNDERSTAND, "deflated dataset is not a valid deflate stream"
    if total > limit:
        return StoreStatus.OUT_OF_RESOURCES, "inflated dataset larger than max_dataset_mb"
    return None


def _inflated_size(data: memoryview, limit: int) -> int:
    """Inflate raw deflate `data` piecewise, discarding the output; stops past `limit`."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    for start in range(0, len(data), _INFLATE_INPUT):
        pending: bytes | memoryview = data[start : start + _INFLATE_INPUT]
        while pending and not inflater.eof:
            total += len(inflater.decompress(pending, _INFLATE_CHUNK))
            if total > limit:
                return total
            pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    return total


def before_reading(encoded: bytes | bytearray, limit: int) -> Refusal | None:
    """Refusals decided on the bytes alone: the file's size, then a deflated dataset's
    inflated size."""
    if limit and len(encoded) > limit:
        return StoreStatus.OUT_OF_RESOURCES, "dataset larger than max_dataset_mb"
    return inflation_refusal(encoded, limit)


def inflation_refusal(encoded: bytes | bytearray, limit: int) -> Refusal | None:
    """`oversized` for a file whose dataset is deflated, before pydicom inflates it in one
    piece: a deflate bomb pulled from a PACS or uploaded is refused like one sent by C-STORE.

    Only the file meta is parsed here (pydicom's reader for it is not public API, but has been
    stable since pydicom 1); anything odd is left to `dcmread`, which explains it."""
    if not limit:
        return None
    fp = BytesIO(encoded)
    try:
        read_preamble(fp, False)
        syntax = UID(str(_read_file_meta_info(fp).get("TransferSyntaxUID", "")))
    except DECODE_ERRORS:
        return None
    if not syntax.is_deflated:
        return None
    with memoryview(encoded) as view:
        return oversized(view[fp.tell() :], deflated=True, limit=limit)


def header_refusal(
    header: Dataset,
    *,
    sop_class_uid: str | None = None,
    sop_instance_uid: str | None = None,
    study_instance_uid: str | None = None,
) -> Refusal | None:
    """The checks on a dataset's header (read without its pixel data): nesting depth, valid
    SOP identifiers, and the request's identifiers (`sop_*` claimed by a C-STORE, the study of
    a STOW-RS URL; None: the dataset's own are taken)."""
    try:
        # pydicom converts values lazily: everything read from the header stays in here.
        if _nesting_depth(header) > MAX_SEQUENCE_DEPTH:
            return StoreStatus.CANNOT_UNDERSTAND, "sequences nested too deeply"
        sop_class_uid = sop_class_uid or str(header.get("SOPClassUID", ""))
        sop_instance_uid = sop_instance_uid or str(header.get("SOPInstanceUID", ""))
        if not looks_like_uid(sop_instance_uid) or not looks_like_uid(sop_class_uid):
            return StoreStatus.CANNOT_UNDERSTAND, "SOP class/instance UID is not a valid UID"
        mismatch = _mismatch(header, sop_class_uid, sop_instance_uid, study_instance_uid)
    except DECODE_ERRORS as exc:
        return StoreStatus.CANNOT_UNDERSTAND, f"dataset cannot be decoded ({type(exc).__name__})"
    return (StoreStatus.DATASET_MISMATCH, mismatch) if mismatch else None


#: Deeper nesting is refused: real objects (SR content trees included) stay far below, and
#: pydicom reads and writes sequences recursively (stack and time grow with the depth).
MAX_SEQUENCE_DEPTH = 32


def _nesting_depth(ds: Dataset) -> int:
    """How deeply sequences nest in `ds` (0: no sequences); stops counting past the limit.

    Only elements that may be sequences are converted (pydicom converts values lazily, and
    converting all of them cost as much as the rest of a small image's C-STORE)."""
    deepest = 0
    stack = [(ds, 0)]
    while stack:
        current, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_SEQUENCE_DEPTH:
            break
        for raw in current.elements():
            if not _may_be_sequence(raw):
                continue
            elem = current[raw.tag]
            if elem.VR == "SQ":
                stack.extend((item, depth + 1) for item in elem.value)
    return deepest


def _may_be_sequence(elem: Any) -> bool:
    """False only for elements pydicom will not read as a sequence when it converts them."""
    vr, undefined = elem.VR, getattr(elem, "length", 0) == 0xFFFFFFFF
    if vr is None:  # implicit VR, not converted yet: the dictionary (or the length) decides
        if undefined or Tag(elem.tag).is_private:
            return True
        try:
            return bool(dictionary_VR(elem.tag) == "SQ")
        except KeyError:
            return True
    return vr in ("SQ", "UN") or undefined


def _mismatch(
    header: Dataset, sop_class_uid: str, sop_instance_uid: str, study: str | None
) -> str | None:
    if str(header.get("SOPClassUID", "")) != sop_class_uid:
        return "SOP Class UID in the dataset differs from the request"
    if str(header.get("SOPInstanceUID", "")) != sop_instance_uid:
        return "SOP Instance UID in the dataset differs from the request"
    if not looks_like_uid(str(header.get("StudyInstanceUID", ""))):
        return "Study Instance UID missing or invalid"
    if study is not None and str(header.StudyInstanceUID) != study:
        return "Study Instance UID differs from the request's study"
    series = header.get("SeriesInstanceUID", "")
    if series and not looks_like_uid(str(series)):
        return "Series Instance UID invalid"
    return None
