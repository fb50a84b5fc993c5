"""Image files (PNG/JPEG/BMP/TIFF, or DICOM by content) → greyscale, for HTTP uploads and
training folders."""

from __future__ import annotations

import io
import os

import numpy as np
import pydicom
from PIL import Image, ImageMode, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicomnode.imaging.decode import MAX_PIXELS
from dicomnode.imaging.grayscale import to_grayscale
from dicomnode.imaging.header import NotClassifiable, safe_code

_PIL_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF"})


class ImageTooLarge(NotClassifiable):
    """A picture whose decoded pixels would pass the node's `max_dataset_mb`: refused from its
    header, before it is decompressed (a small TIFF or PNG can inflate to gigabytes)."""


def load_image(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    max_decoded_bytes: int = 0,
) -> np.ndarray:
    """PNG/JPEG/BMP/TIFF (8/16 bit, grey or colour → luma) or DICOM → float32 HxW in [0, 1].

    DICOM is recognised by content ("DICM" at offset 128, or a dataset that parses and has
    pixel data) and goes through `to_grayscale`. JPEG/TIFF EXIF orientation is applied.
    Raises NotClassifiable for anything else (ImageTooLarge for a picture that would decode to
    more than `max_decoded_bytes`; 0: only `MAX_PIXELS`); a missing file raises OSError.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data = bytes(path_or_bytes)
    else:
        with open(path_or_bytes, "rb") as fh:
            data = fh.read()
    if not data:
        raise NotClassifiable("empty file")
    if data[128:132] == b"DICM":
        return to_grayscale(_read_dicom(data, force=False))
    try:
        return _pil_to_float(data, max_decoded_bytes)
    except UnidentifiedImageError:
        pass  # not a PIL image: a DICOM dataset without preamble is the last option
    return to_grayscale(_read_dicom(data, force=True))


def _read_dicom(data: bytes, *, force: bool) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=force)
        if "PixelData" not in ds or "Rows" not in ds:
            raise NotClassifiable(
                "not an image (no recognised image format)"
                if force
                else "DICOM file without pixel data (truncated, or not an image)"
            )
        return ds
    except NotClassifiable:
        raise
    except Exception as exc:  # pydicom raises many types on garbage
        if not force or isinstance(exc, InvalidDicomError):
            raise NotClassifiable("not a readable DICOM file") from exc
        raise NotClassifiable("not an image (no recognised image format)") from exc


def _pil_to_float(data: bytes, max_decoded_bytes: int) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in _PIL_FORMATS:
                raise NotClassifiable(f"{safe_code(img.format or '')} images are not supported")
            if img.format == "TIFF" and getattr(img, "n_frames", 1) > 1:
                raise NotClassifiable("multi-page image is not supported")
            width, height = img.size
            if width * height > MAX_PIXELS or width * height == 0:
                raise NotClassifiable(f"image size {width}x{height} is not supported")
            if max_decoded_bytes and width * height * _pixel_bytes(img.mode) > max_decoded_bytes:
                raise ImageTooLarge("decoded image larger than max_dataset_mb")
            img.load()
            oriented = ImageOps.exif_transpose(img)
            return _pil_array(oriented)
    except (NotClassifiable, UnidentifiedImageError):
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise NotClassifiable("image file is truncated or corrupt") from exc


def _pixel_bytes(mode: str) -> int:
    """Bytes per pixel of a PIL mode once decoded (an unknown mode: 4 bands of 4 bytes)."""
    try:
        described = ImageMode.getmode(mode)
    except KeyError:
        return 16
    return len(described.bands) * np.dtype(described.typestr).itemsize


def _pil_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32) / np.float32(65535.0)
    if mode in ("I", "F"):
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32))
        top = 65535.0 if mode == "I" else 1.0
        if arr.min() >= 0 and arr.max() <= top:
            return arr / np.float32(top)
        low, high = float(arr.min()), float(arr.max())
        return (arr - low) / np.float32(high - low) if high > low else np.zeros_like(arr)
    if mode == "LA":
        img = img.getchannel("L")
    elif mode != "L":
        img = (img if mode in ("1", "P", "RGB", "RGBA") else img.convert("RGB")).convert("L")
    return np.asarray(img, dtype=np.float32) / np.float32(255.0)
