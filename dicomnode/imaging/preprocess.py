"""Radiograph → display-like greyscale image → model input. Pure; shared with training.

`to_grayscale` turns a DICOM dataset into what a radiologist sees: float32 HxW in [0, 1],
black = low attenuation as displayed. The pipeline is the standard's (PS3.4 N.2.1): stored
values → Modality LUT (rescale or LUT) → VOI (VOI LUT Sequence, else the *first* window, else a
robust 0.5-99.5 % percentile window that ignores padding) → MONOCHROME1 inverted. Pixel
Padding Value (and Range Limit) pixels come out 0 (black). The linear/sigmoid window is done
here in float32 (pydicom's float64 `apply_voi_lut` is ~7x slower); a VOI LUT Sequence and a
Modality LUT Sequence are applied with pydicom. Presentation LUT Shape is not applied: for
CR/DX it must agree with the photometric interpretation (INVERSE only with MONOCHROME1).

Model geometry (`to_model_input`): the long side is resized to `input_size` (antialiased
Lanczos after an integer box reduction), the short side keeps the aspect ratio, and the image
is centred on a black (0.0) square before normalisation: a letterbox. `heatmap_to_image`
inverts that: it crops the letterbox bars off a model-grid heatmap and resizes the rest to the
image's aspect (long side at most 512 px by default).
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, pixel_array
from pydicom.uid import (
    JPEG2000,
    UID,
    BreastProjectionXRayImageStorageForPresentation,
    BreastProjectionXRayImageStorageForProcessing,
    BreastTomosynthesisImageStorage,
    ComputedRadiographyImageStorage,
    DigitalIntraOralXRayImageStorageForPresentation,
    DigitalIntraOralXRayImageStorageForProcessing,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
)

from dicomnode import MANUFACTURER
from dicomnode.imaging.dicom_errors import VALUE_ERRORS

#: Larger images are refused before decoding (a 43x43 cm detector at 0.1 mm is ~18 MP).
MAX_PIXELS = 100_000_000
#: Percentile window used when the dataset has neither a VOI LUT nor a window.
PERCENTILE_WINDOW = (0.5, 99.5)
#: Default long side of `heatmap_to_image`'s output.
HEATMAP_MAX_SIZE = 512

RADIOGRAPH_CLASSES = frozenset(
    {
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
    }
)
#: Modalities that make a Secondary Capture a radiograph.
RADIOGRAPHIC_MODALITIES = frozenset({"CR", "DX", "RG"})
_MAMMOGRAPHY_CLASSES = frozenset(
    {
        DigitalMammographyXRayImageStorageForPresentation,
        DigitalMammographyXRayImageStorageForProcessing,
        BreastTomosynthesisImageStorage,
        BreastProjectionXRayImageStorageForPresentation,
        BreastProjectionXRayImageStorageForProcessing,
    }
)
_DENTAL_CLASSES = frozenset(
    {DigitalIntraOralXRayImageStorageForPresentation, DigitalIntraOralXRayImageStorageForProcessing}
)
_PERCENTILE_SAMPLES = 1 << 18  # pixels sampled (on a regular grid) for the percentile window
_HEADER_ERRORS = VALUE_ERRORS  # a malformed value counts as absent (dicom_errors)


class NotClassifiable(ValueError):
    """The input cannot be turned into a model image; `reason` is safe to log (no PHI/UIDs)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- header helpers: tolerant when reading -----------------------------------------------


def _get(ds: Dataset, keyword: str) -> Any:
    """Value of `keyword` or None; a malformed value counts as absent (never raises)."""
    try:
        return ds.get(keyword)
    except _HEADER_ERRORS:
        return None


def _text(ds: Dataset, keyword: str) -> str:
    value = _get(ds, keyword)
    return "" if value is None else str(value).strip()


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = _get(ds, keyword)
        return None if value is None or value == "" else int(value)
    except _HEADER_ERRORS:
        return None


def _code(value: str) -> str:
    """A code string (CS) made safe to put into a reason."""
    cleaned = "".join(ch for ch in value.upper() if ch.isalnum() or ch in " _")[:16].strip()
    return cleaned or "none"


def _uid_label(uid: str) -> str:
    """The standard name of a well-known UID; never the UID itself."""
    known = UID(uid)
    if not known.name or known.name == uid:
        return "an unrecognised SOP class"
    return f"{known.name} (retired)" if known.is_retired else known.name


# --- eligibility --------------------------------------------------------------------------


def eligibility(ds: Dataset, *, uid_root: str, min_size: int = 0) -> str | None:
    """None if `ds` is a radiograph to classify, else the reason to skip it.

    Classified: CR, DX (for presentation and for processing), and single-frame Secondary
    Capture whose Modality is CR, DX or RG (unless it is synthetic), with Rows and Columns of
    at least `min_size` (the model card's `min_image_size`: smaller is a thumbnail or a test
    pattern, not a diagnostic radiograph). The node's own output (Manufacturer, or a SOP
    Instance UID under `uid_root`) is never classified, so a routing loop cannot form. Works on
    headers alone (pixel data may be absent) and never raises.
    """
    reason = _class_eligibility(ds, uid_root=uid_root)
    if reason is not None or not min_size:
        return reason
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    if rows is None or columns is None or rows <= 0 or columns <= 0:
        return None  # no geometry: decoding refuses it with its own reason
    return too_small(rows=rows, columns=columns, min_size=min_size)


def too_small(*, rows: int, columns: int, min_size: int) -> str | None:
    """The reason to skip an image with fewer than `min_size` rows or columns, else None."""
    if rows < min_size or columns < min_size:
        return (
            f"image too small to be a diagnostic radiograph ({rows}x{columns} px; the model "
            f"card's min_image_size is {min_size} px per side)"
        )
    return None


def _class_eligibility(ds: Dataset, *, uid_root: str) -> str | None:
    """The SOP class / modality / own-output part of `eligibility`."""
    manufacturer = _text(ds, "Manufacturer")
    instance_uid = _text(ds, "SOPInstanceUID")
    root = uid_root.strip().rstrip(".")
    if manufacturer.casefold() == MANUFACTURER.casefold() or (
        root and (instance_uid == root or instance_uid.startswith(root + "."))
    ):
        return "own output"
    sop_class = _text(ds, "SOPClassUID")
    if not sop_class:
        file_meta = getattr(ds, "file_meta", None)
        sop_class = _text(file_meta, "MediaStorageSOPClassUID") if file_meta else ""
    if not sop_class:
        return "no SOP Class UID"
    modality = _text(ds, "Modality").upper()
    if sop_class in _MAMMOGRAPHY_CLASSES or modality == "MG":
        return "mammography is outside the intended use"
    if sop_class in _DENTAL_CLASSES or modality in ("IO", "PX"):
        return "dental X-ray is outside the intended use"
    if sop_class in RADIOGRAPH_CLASSES:
        return None
    if sop_class == SecondaryCaptureImageStorage:
        if modality not in RADIOGRAPHIC_MODALITIES:
            return f"secondary capture with modality {_code(modality)} is not a radiograph"
        if _text(ds, "ConversionType").upper() == "SYN":
            return "synthetic secondary capture is not a radiograph"
        return None
    if modality and modality not in RADIOGRAPHIC_MODALITIES:
        return f"modality {_code(modality)} is not a radiograph"
    return f"{_uid_label(sop_class)} is not a supported radiograph class"


# --- DICOM → greyscale --------------------------------------------------------------------


def _check_header(ds: Dataset) -> tuple[int, int]:
    """Refuse what cannot or should not be decoded, before decoding it."""
    frames = _int(ds, "NumberOfFrames")
    if frames is not None and frames > 1:
        raise NotClassifiable(f"multi-frame image ({frames} frames) is not supported")
    samples = _int(ds, "SamplesPerPixel")
    photometric = _text(ds, "PhotometricInterpretation").upper()
    if samples not in (None, 1):
        raise NotClassifiable(f"colour image ({samples} samples per pixel) is not supported")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotClassifiable(
            f"photometric interpretation {_code(photometric)} is not supported (greyscale only)"
        )
    if "PixelData" not in ds:
        raise NotClassifiable("no pixel data")
    rows, columns = _int(ds, "Rows") or 0, _int(ds, "Columns") or 0
    if rows <= 0 or columns <= 0:
        raise NotClassifiable("image has no rows or columns")
    if rows * columns > MAX_PIXELS:
        raise NotClassifiable(f"image too large ({rows * columns / 1e6:.0f} megapixels)")
    bits = _int(ds, "BitsAllocated")
    if bits not in (8, 16, 32):
        raise NotClassifiable(f"bits allocated {bits} is not supported")
    return rows, columns


def _with_transfer_syntax(ds: Dataset) -> tuple[Dataset, UID]:
    """`ds` with a Transfer Syntax UID (inferred for native data built in memory)."""
    file_meta = getattr(ds, "file_meta", None)
    ts = _get(file_meta, "TransferSyntaxUID") if file_meta is not None else None
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


def _decode(ds: Dataset, rows: int, columns: int, min_size: int = 0) -> np.ndarray:
    ds, ts = _with_transfer_syntax(ds)
    if min_size and ts in _J2K_SYNTAXES:
        reduced = _decode_j2k_reduced(ds, min_size)
        if reduced is not None:
            return reduced
    label = ts.name if ts.name != str(ts) else "unrecognised transfer syntax"
    value = _get(ds, "PixelData")
    if not value:
        raise NotClassifiable("no pixel data")
    if not ts.is_encapsulated:
        expected = rows * columns * (_int(ds, "BitsAllocated") or 8) // 8
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
    bits_stored = _int(ds, "BitsStored")
    if arr.dtype.kind == "u" and bits_stored and bits_stored < arr.dtype.itemsize * 8:
        arr = arr & arr.dtype.type((1 << bits_stored) - 1)  # drop overlay/garbage high bits
    return arr


_J2K_SYNTAXES = frozenset({JPEG2000, JPEG2000Lossless})


def _decode_j2k_reduced(ds: Dataset, min_size: int) -> np.ndarray | None:
    """A JPEG 2000 image at a reduced pyramid level (see `dicomnode.imaging.j2k`), or None."""
    from dicomnode.imaging import j2k

    if _int(ds, "PixelRepresentation") or _int(ds, "SamplesPerPixel") not in (None, 1):
        return None
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except (StopIteration, ValueError, KeyError, TypeError):
        return None
    arr = j2k.decode_reduced(frame, min_size=min_size)
    if arr is None:
        return None
    bits_stored = _int(ds, "BitsStored")
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


def _padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """True where a stored value is Pixel Padding (Value, or Value..Range Limit)."""
    value = _int(ds, "PixelPaddingValue")
    if value is None:
        return None
    limit = _int(ds, "PixelPaddingRangeLimit")
    bits = stored.dtype.itemsize * 8
    if stored.dtype.kind == "i":  # US/SS ambiguity: a signed image's padding read as unsigned
        value = value - (1 << bits) if value >= 1 << (bits - 1) else value
        if limit is not None and limit >= 1 << (bits - 1):
            limit -= 1 << bits
    if limit is None:
        mask = stored == value
    else:
        low, high = min(value, limit), max(value, limit)
        mask = (stored >= low) & (stored <= high)
    return mask if mask.any() else None


def _modality_lut(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    if _get(ds, "ModalityLUTSequence"):
        return apply_modality_lut(stored, ds).astype(np.float32)
    values = stored.astype(np.float32)
    slope = _float(_get(ds, "RescaleSlope"), 1.0)
    intercept = _float(_get(ds, "RescaleIntercept"), 0.0)
    if slope != 1.0:
        values *= np.float32(slope)
    if intercept != 0.0:
        values += np.float32(intercept)
    return values


def _float(value: Any, default: float) -> float:
    try:
        several = isinstance(value, Sequence | np.ndarray) and not isinstance(value, str)
        number = float(value[0] if several else value)
    except _HEADER_ERRORS:
        return default
    return number if np.isfinite(number) else default


def _first_window(ds: Dataset) -> tuple[float, float] | None:
    center = _float(_get(ds, "WindowCenter"), float("nan"))
    width = _float(_get(ds, "WindowWidth"), float("nan"))
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        return None
    return center, width


def _window(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray | None:
    """PS3.3 C.11.2.1.2/3 in float32, in place, to [0, 1]; None if the width is invalid."""
    if function == "SIGMOID":
        values -= np.float32(center)
        values *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):  # exp → inf gives 1 / inf = 0, as it should
            np.exp(values, out=values)
        values += np.float32(1.0)
        np.reciprocal(values, out=values)
        return values
    if function == "LINEAR_EXACT":
        low, scale = center - width / 2, 1.0 / width
    elif width < 1:
        return None
    elif width == 1:  # degenerate LINEAR window: a threshold at center - 0.5
        return (values > center - 0.5).astype(np.float32)
    else:  # LINEAR: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped
        low, scale = center - 0.5 - (width - 1) / 2, 1.0 / (width - 1)
    values -= np.float32(low)
    values *= np.float32(scale)
    return np.clip(values, 0.0, 1.0, out=values)


def _voi_lut(ds: Dataset, values: np.ndarray) -> np.ndarray:
    """First VOI LUT Sequence item via pydicom, scaled by the LUT's own output range."""
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries, first = int(descriptor[0]) or 65536, int(descriptor[1])
    lut = apply_voi(np.arange(first, first + entries, dtype=np.int64), ds, index=0)
    low, high = float(lut.min()), float(lut.max())
    out = apply_voi(np.rint(values).astype(np.int64), ds, index=0).astype(np.float32)
    if high <= low:
        return np.zeros_like(out)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def _percentile_window(values: np.ndarray, padding: np.ndarray | None) -> np.ndarray:
    """Robust window from a regular-grid sample of the non-padding pixels."""
    step = max(1, int(np.sqrt(values.size / _PERCENTILE_SAMPLES)))
    sample = values[::step, ::step]
    if padding is not None:
        sample = sample[~padding[::step, ::step]]
    if sample.size == 0:
        return np.zeros_like(values)
    low, high = (float(v) for v in np.percentile(sample, PERCENTILE_WINDOW))
    if high <= low:
        low, high = float(sample.min()), float(sample.max())
    if high <= low:
        return np.zeros_like(values)
    values -= np.float32(low)
    values *= np.float32(1.0 / (high - low))
    return np.clip(values, 0.0, 1.0, out=values)


def to_grayscale(ds: Dataset, *, min_size: int = 0) -> np.ndarray:
    """The displayed radiograph as float32 HxW in [0, 1] (see the module docstring).

    `min_size` > 0 lets a JPEG 2000 image be decoded at a reduced resolution whose long side
    is still at least `min_size` (several times faster; same aspect ratio, smaller array).

    Raises NotClassifiable (with a PHI-free reason) for multi-frame, colour, absurdly large,
    missing, short or undecodable pixel data.
    """
    rows, columns = _check_header(ds)
    stored = _decode(ds, rows, columns, min_size)
    padding = _padding_mask(ds, stored)
    values = _modality_lut(ds, stored)
    image: np.ndarray | None = None
    try:
        if _get(ds, "VOILUTSequence"):
            image = _voi_lut(ds, values)
        elif (window := _first_window(ds)) is not None:
            function = _text(ds, "VOILUTFunction").upper() or "LINEAR"
            image = _window(values, *window, function)
    except (*_HEADER_ERRORS, NotImplementedError, struct.error) as exc:
        raise NotClassifiable("VOI LUT could not be applied") from exc
    if image is None:
        image = _percentile_window(values, padding)
    if _text(ds, "PhotometricInterpretation").upper() == "MONOCHROME1":
        np.subtract(np.float32(1.0), image, out=image)
    if padding is not None:
        image[padding] = 0.0
    return np.ascontiguousarray(image, dtype=np.float32)


# --- other image files ----------------------------------------------------------------------

_PIL_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF"})


def load_image(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
) -> np.ndarray:
    """PNG/JPEG/BMP/TIFF (8/16 bit, grey or colour → luma) or DICOM → float32 HxW in [0, 1].

    DICOM is recognised by content ("DICM" at offset 128, or a dataset that parses and has
    pixel data) and goes through `to_grayscale`. JPEG/TIFF EXIF orientation is applied.
    Raises NotClassifiable for anything else; a missing file raises OSError as usual.
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
        return _pil_to_float(data)
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


def _pil_to_float(data: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in _PIL_FORMATS:
                raise NotClassifiable(f"{_code(img.format or '')} images are not supported")
            if img.format == "TIFF" and getattr(img, "n_frames", 1) > 1:
                raise NotClassifiable("multi-page image is not supported")
            width, height = img.size
            if width * height > MAX_PIXELS or width * height == 0:
                raise NotClassifiable(f"image size {width}x{height} is not supported")
            img.load()
            oriented = ImageOps.exif_transpose(img)
            return _pil_array(oriented)
    except (NotClassifiable, UnidentifiedImageError):
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise NotClassifiable("image file is truncated or corrupt") from exc


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


# --- model geometry ---------------------------------------------------------------------------


def _letterbox(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """(height, width, top, left) of the resized image inside the size x size square."""
    height, width = shape
    long_side = max(height, width)
    new_h = max(1, round(height * size / long_side))
    new_w = max(1, round(width * size / long_side))
    return new_h, new_w, (size - new_h) // 2, (size - new_w) // 2


def to_model_input(
    image: np.ndarray, *, input_size: int, mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """Letterboxed, normalised model input: float32 (3, input_size, input_size).

    Long side resized to `input_size` with antialiasing, aspect kept, centred on black (0.0)
    padding, grey replicated to 3 channels, then (x - mean[c]) / std[c].
    """
    if image.ndim != 2 or image.size == 0:
        raise ValueError("image must be a non-empty 2-D array")
    if input_size < 1 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError("input_size must be positive and mean/std have 3 values (std > 0)")
    new_h, new_w, top, left = _letterbox((image.shape[0], image.shape[1]), input_size)
    src = np.ascontiguousarray(image, dtype=np.float32)
    if (new_h, new_w) != src.shape:
        pil = Image.fromarray(src)
        src = np.asarray(
            pil.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=2.0),
            dtype=np.float32,
        )
        src = np.clip(src, 0.0, 1.0)  # Lanczos overshoots slightly at edges
    out = np.empty((3, input_size, input_size), dtype=np.float32)
    for channel in range(3):
        m, s = np.float32(mean[channel]), np.float32(std[channel])
        out[channel].fill(-m / s)
        out[channel, top : top + new_h, left : left + new_w] = (src - m) / s
    return out


def heatmap_to_image(
    heatmap: np.ndarray, image_shape: tuple[int, int], *, max_size: int = HEATMAP_MAX_SIZE
) -> np.ndarray:
    """Undo `to_model_input`'s letterbox on a model-grid heatmap.

    Returns float32 with the image's aspect ratio and orientation, long side
    min(max_size, image long side); the caller scales it to the image when drawing.
    """
    if heatmap.ndim != 2 or heatmap.size == 0:
        raise ValueError("heatmap must be a non-empty 2-D array")
    height, width = int(image_shape[0]), int(image_shape[1])
    if height <= 0 or width <= 0:
        raise ValueError("image_shape must be positive")
    long_side = max(height, width)
    out_long = min(max_size, long_side)
    out_h = max(1, round(height * out_long / long_side))
    out_w = max(1, round(width * out_long / long_side))
    grid_h, grid_w = heatmap.shape
    frac_h, frac_w = height / long_side, width / long_side
    box = (
        grid_w * (1 - frac_w) / 2,
        grid_h * (1 - frac_h) / 2,
        grid_w * (1 + frac_w) / 2,
        grid_h * (1 + frac_h) / 2,
    )
    pil = Image.fromarray(np.ascontiguousarray(heatmap, dtype=np.float32))
    resized = pil.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.float32).copy()
