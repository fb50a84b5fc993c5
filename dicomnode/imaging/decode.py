"""Stored pixel values out of a dataset: refused before decoding what cannot or should not be
decoded (multi-frame, colour, absurd sizes, streams claiming more than Rows x Columns), JPEG
2000 decoded at a reduced resolution when allowed (`dicomnode.imaging.j2k`)."""

from __future__ import annotations

import struct

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
)

from dicomnode.imaging.header import NotClassifiable, safe_code, tag_int, tag_text, tag_value

#: Larger images are refused before decoding (a 43x43 cm detector at 0.1 mm is ~18 MP).
MAX_PIXELS = 100_000_000


def check_header(ds: Dataset) -> tuple[int, int]:
    """Refuse what cannot or should not be decoded, before decoding it."""
    frames = tag_int(ds, "NumberOfFrames")
    if frames is not None and frames > 1:
        raise NotClassifiable(f"multi-frame image ({frames} frames) is not supported")
    samples = tag_int(ds, "SamplesPerPixel")
    photometric = tag_text(ds, "PhotometricInterpretation").upper()
    if samples not in (None, 1):
        raise NotClassifiable(f"colour image ({samples} samples per pixel) is not supported")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotClassifiable(
            f"photometric interpretation {safe_code(photometric)} is not supported (greyscale only)"
        )
    if "PixelData" not in ds:
        raise NotClassifiable("no pixel data")
    rows, columns = tag_int(ds, "Rows") or 0, tag_int(ds, "Columns") or 0
    if rows <= 0 or columns <= 0:
        raise NotClassifiable("image has no rows or columns")
    if rows * columns > MAX_PIXELS:
        raise NotClassifiable(f"image too large ({rows * columns / 1e6:.0f} megapixels)")
    bits = tag_int(ds, "BitsAllocated")
    if bits not in (8, 16, 32):
        raise NotClassifiable(f"bits allocated {bits} is not supported")
    return rows, columns


def _with_transfer_syntax(ds: Dataset) -> tuple[Dataset, UID]:
    """`ds` with a Transfer Syntax UID (inferred for native data built in memory)."""
    file_meta = getattr(ds, "file_meta", None)
    ts = tag_value(file_meta, "TransferSyntaxUID") if file_meta is not None else None
    if ts:
        return ds, UID(ts)
    if getattr(ds["PixelData"], "is_undefined_length", False):
        raise NotClassifiable("compressed pixel data without a transfer syntax")
    _, little_endian = ds.original_encoding
    inferred = ExplicitVRBigEndian if little_endian is False else ExplicitVRLittleEndian
    shallow = ds.copy()  # shallow: shares element values, so the caller's dataset is untouched
    shallow.file_meta = FileMetaDataset()
    shallow.file_meta.TransferSyntaxUID = inferred
    return shallow, inferred


def decode_stored(ds: Dataset, *, rows: int, columns: int, min_size: int = 0) -> np.ndarray:
    """The stored pixel values of the first frame (`rows` x `columns` from `check_header`), or
    smaller for a JPEG 2000 image when `min_size` allows; NotClassifiable when undecodable."""
    ds, ts = _with_transfer_syntax(ds)
    if min_size and ts in _J2K_SYNTAXES:
        reduced = _decode_j2k_reduced(ds, min_size)
        if reduced is not None:
            return reduced
    label = ts.name if ts.name != str(ts) else "unrecognised transfer syntax"
    value = tag_value(ds, "PixelData")
    if not value:
        raise NotClassifiable("no pixel data")
    if not ts.is_encapsulated:
        expected = rows * columns * (tag_int(ds, "BitsAllocated") or 8) // 8
        if len(value) < expected:
            raise NotClassifiable(f"pixel data too short ({len(value)} of {expected} bytes)")
    else:
        size = _codestream_size(value)
        if size is not None and size[0] * size[1] > rows * columns:
            # A decoder allocates what the stream claims: 65535² from a few bytes. (A smaller
            # claim is left to the decoder and the shape check below.)
            raise NotClassifiable(f"compressed stream larger than Rows/Columns ({label})")
    try:
        arr = pixel_array(ds, index=0)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # decoders raise anything (Rust ones a BaseException panic)
        raise NotClassifiable(f"pixel data could not be decoded ({label})") from exc
    if arr.shape != (rows, columns):
        raise NotClassifiable(f"decoded pixel data has an unexpected shape ({label})")
    bits_stored = tag_int(ds, "BitsStored")
    if arr.dtype.kind == "u" and bits_stored and bits_stored < arr.dtype.itemsize * 8:
        arr = arr & arr.dtype.type((1 << bits_stored) - 1)  # drop overlay/garbage high bits
    return arr


_J2K_SYNTAXES = frozenset({JPEG2000, JPEG2000Lossless})


def _decode_j2k_reduced(ds: Dataset, min_size: int) -> np.ndarray | None:
    """A JPEG 2000 image at a reduced pyramid level (see `dicomnode.imaging.j2k`), or None."""
    from dicomnode.imaging import j2k

    if tag_int(ds, "PixelRepresentation") or tag_int(ds, "SamplesPerPixel") not in (None, 1):
        return None
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except (StopIteration, ValueError, KeyError, TypeError):
        return None
    arr = j2k.decode_reduced(frame, min_size=min_size)
    if arr is None:
        return None
    bits_stored = tag_int(ds, "BitsStored")
    if bits_stored and bits_stored < arr.dtype.itemsize * 8:
        arr &= arr.dtype.type((1 << bits_stored) - 1)
    return arr


def _codestream_size(value: bytes) -> tuple[int, int] | None:
    """(rows, columns) from the first fragment's JPEG / JPEG-LS SOF or JPEG 2000 SIZ marker,
    or None when the stream is not one of those (or too damaged to tell)."""
    try:
        fragment = next(pydicom.encaps.generate_fragments(value[8 + _bot_length(value) :]), b"")
    except (ValueError, StopIteration, struct.error):
        return None
    head = bytes(fragment[:65536])
    siz = head.find(b"\xff\x4f\xff\x51")
    if siz >= 0 and len(head) >= siz + 24:
        x, y, x0, y0 = struct.unpack_from(">IIII", head, siz + 8)
        return y - y0, x - x0
    pos = 2 if head[:2] == b"\xff\xd8" else -1
    while pos >= 0 and pos + 9 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE,
                      0xCF, 0xF7):  # fmt: skip
            rows, columns = struct.unpack_from(">HH", head, pos + 5)
            return (rows, columns) if rows else None
        (length,) = struct.unpack_from(">H", head, pos + 2)
        pos += 2 + length
    return None


def _bot_length(value: bytes) -> int:
    """Length of the Basic Offset Table item at the start of encapsulated pixel data."""
    if len(value) < 8 or value[:4] != b"\xfe\xff\x00\xe0":
        raise ValueError("not encapsulated")
    return int(struct.unpack_from("<I", value, 4)[0])
