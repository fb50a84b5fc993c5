"""Generated malformed DICOM files for the fuzz test (deterministic, from one real CR).

Each case is a DICOM file whose file meta (what the SCU puts in the C-STORE command) is
well-formed, and whose dataset bytes are broken in one specific way. pynetdicom sends a file
path's dataset bytes as they are (`STORE_SEND_CHUNKED_DATASET`), so the node sees exactly
these bytes on the wire.

`strict` cases are certainly not classifiable: the node must answer a failure status or record
the job `failed`/`skipped` with a reason. The others (random byte flips, corrupt compressed
streams a decoder may still read) may legitimately be classified; for them the node only has
to answer, stay up and record a terminal state.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from tests.support.data import new_uid

CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
CT_CLASS = "1.2.840.10008.5.1.4.1.1.2"
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit,
            RLELossless, DeflatedExplicitVRLittleEndian]  # fmt: skip
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR",
             b"SV", b"UV"}  # fmt: skip


@dataclass(frozen=True)
class Case:
    name: str
    category: str
    path: Path
    sop_instance_uid: str  # the one in the command
    strict: bool


# ----------------------------------------------------------------------------- byte helpers


def encode_file(ds: Dataset, *, syntax: str = ExplicitVRLittleEndian) -> bytes:
    ds.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    with pydicom_config.disable_value_validation():
        ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian,
                   little_endian=True)  # fmt: skip
    return buf.getvalue()


def split_file(data: bytes) -> tuple[bytes, bytes]:
    """(preamble + DICM + file meta, dataset bytes)."""
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    end = 132 + 12 + group_length
    return data[:end], data[end:]


def file_with(meta: FileMetaDataset, body: bytes, preamble: bytes = b"\0" * 128) -> bytes:
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.FileMetaInformationVersion = b"\x00\x01"
    buf = io.BytesIO()
    with pydicom_config.disable_value_validation():
        pydicom.filewriter.write_file_meta_info(
            pydicom.filebase.DicomFileLike(buf), meta, enforce_standard=True
        )
    return preamble + b"DICM" + buf.getvalue() + body


def walk(body: bytes) -> list[tuple[int, int, int, bytes, int]]:
    """Top-level elements of an explicit VR LE body: (tag, start, value_start, vr, length)."""
    out = []
    pos = 0
    while pos + 8 <= len(body):
        group, elem = struct.unpack_from("<HH", body, pos)
        vr = body[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", body, pos + 8)
            value = pos + 12
        else:
            (length,) = struct.unpack_from("<H", body, pos + 6)
            value = pos + 8
        out.append(((group << 16) | elem, pos, value, vr, length))
        pos = value + length
    return out


def element(tag: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    head += struct.pack("<2xI", n) if vr in _LONG_VRS else struct.pack("<H", n)
    return head + value


def insert_before(body: bytes, tag: int, data: bytes) -> bytes:
    for t, start, *_ in walk(body):
        if t > tag:
            return body[:start] + data + body[start:]
    return body + data


def nested_sequence(depth: int, *, undefined: bool) -> bytes:
    """A private sequence nested `depth` levels deep (each item holds the next sequence)."""
    inner = element(0x00091002, b"LO", b"leaf")
    for _ in range(depth):
        if undefined:
            item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + inner + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
            inner = element(0x00091001, b"SQ", item + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00",
                            length=0xFFFFFFFF)  # fmt: skip
        else:
            item = b"\xfe\xff\x00\xe0" + struct.pack("<I", len(inner)) + inner
            inner = element(0x00091001, b"SQ", item)
    return element(0x00090010, b"LO", b"FUZZ") + inner


# ----------------------------------------------------------------------------- the cases


class CaseWriter:
    def __init__(self, base: Path, directory: Path) -> None:
        self.base = base
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cases: list[Case] = []

    def dataset(self, name: str) -> tuple[Dataset, str]:
        ds = pydicom.dcmread(self.base)
        uid = new_uid("fuzz", name)
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        return ds, uid

    def add_bytes(self, name: str, category: str, data: bytes, uid: str, *, strict: bool) -> None:
        path = self.dir / f"{len(self.cases):03d}-{name}.dcm"
        path.write_bytes(data)
        self.cases.append(Case(name, category, path, uid, strict))

    def add_ds(self, name: str, category: str, change: Callable[[Dataset], None], *,
               strict: bool = True, syntax: str = ExplicitVRLittleEndian) -> None:  # fmt: skip
        ds, uid = self.dataset(name)
        with pydicom_config.disable_value_validation():
            change(ds)
        _, body = split_file(encode_file(ds, syntax=syntax))
        meta = FileMetaDataset()  # the command keeps the original identifiers
        meta.MediaStorageSOPClassUID = CR_CLASS
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = syntax
        self.add_bytes(name, category, file_with(meta, body), uid, strict=strict)

    def add_body(self, name: str, category: str, change: Callable[[bytes], bytes], *,
                 strict: bool = True, meta: dict[str, str] | None = None) -> None:  # fmt: skip
        ds, _ = self.dataset(name)
        _, body = split_file(encode_file(ds))
        file_meta = ds.file_meta
        for keyword, value in (meta or {}).items():
            setattr(file_meta, keyword, value)
        cmd_uid = str(file_meta.MediaStorageSOPInstanceUID)
        self.add_bytes(name, category, file_with(file_meta, change(body)), cmd_uid, strict=strict)


def generate(base: Path, directory: Path, *, seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    w = CaseWriter(base, directory)
    ds0, _ = w.dataset("probe")
    _, body0 = split_file(encode_file(ds0))
    elements = walk(body0)
    pixel = next(e for e in elements if e[0] == 0x7FE00010)
    pixel_start, pixel_value = pixel[1], pixel[2]

    # 1. Truncated files: cut anywhere in the header and in the pixel data.
    cuts = sorted({0, 1, 4, 7, 8, 11, 12, 30} | {rng.randrange(13, pixel_value) for _ in range(14)}
                  | {pixel_start, pixel_start + 4, pixel_value}
                  | {rng.randrange(pixel_value + 1, len(body0)) for _ in range(12)})  # fmt: skip
    for cut in cuts:
        w.add_body(f"truncated-at-{cut}", "truncated", lambda b, c=cut: b[:c])

    # 2. Huge lengths on elements that carry a 4-byte length, and 0xFFFF on short ones.
    def set_length(b: bytes, tag: int, value: int) -> bytes:
        for t, start, _, vr, _ in walk(b):
            if t == tag:
                fmt, off = ("<I", start + 8) if vr in _LONG_VRS else ("<H", start + 6)
                return b[:off] + struct.pack(fmt, value) + b[off + struct.calcsize(fmt) :]
        raise KeyError(hex(tag))

    for value in (0xFFFFFFF0, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, len(body0), 2**31 + 7):
        # The pixels are all there; only the length lies: a tolerant reader may still use them.
        w.add_body(f"pixel-length-{value:#x}", "huge-length",
                   lambda b, v=value: set_length(b, 0x7FE00010, v), strict=False)  # fmt: skip
    for tag in (0x00080060, 0x00100010, 0x00200013, 0x00280010, 0x00080018):
        strict = tag in (0x00280010, 0x00080018)
        w.add_body(f"short-length-ffff-{tag:08x}", "huge-length",
                   lambda b, t=tag: set_length(b, t, 0xFFFF), strict=strict)  # fmt: skip
    for value in (0x7FFFFFFF, 0xFFFFFFF0):
        w.add_body(f"private-ob-{value:#x}", "huge-length", lambda b, v=value: insert_before(
            b, 0x7FE00010, element(0x00091010, b"OB", b"\0\0\0\0", length=v)),
            strict=False)  # fmt: skip

    # 3. Undefined lengths where they are not allowed (or not closed).
    w.add_body("pixel-undefined-length-native", "undefined-length",
               lambda b: set_length(b, 0x7FE00010, 0xFFFFFFFF))  # fmt: skip
    for vr in (b"OB", b"UN", b"UT"):
        w.add_body(
            f"private-{vr.decode()}-undefined-unclosed",
            "undefined-length",
            lambda b, v=vr: insert_before(
                b, 0x7FE00010, element(0x00091010, v, b"\x01\x02\x03\x04", length=0xFFFFFFFF)
            ),
            strict=False,
        )
    w.add_body("sequence-undefined-never-closed", "undefined-length", lambda b: insert_before(
        b, 0x00100000, element(0x00091001, b"SQ", b"\xfe\xff\x00\xe0\xff\xff\xff\xff",
                               length=0xFFFFFFFF)))  # fmt: skip
    w.add_body(
        "item-length-huge",
        "undefined-length",
        lambda b: insert_before(
            b, 0x00100000, element(0x00091001, b"SQ", b"\xfe\xff\x00\xe0\xf0\xff\xff\xff")
        ),
        strict=False,
    )

    # 4. Deep sequence nesting (defined and undefined lengths).
    for depth in (50, 500, 2000, 10000, 40000):
        for undefined in (False, True):
            strict = depth >= 2000  # a sane node refuses absurd nesting; shallow is legal
            w.add_body(f"nesting-{depth}-{'undef' if undefined else 'def'}", "deep-nesting",
                       lambda b, d=depth, u=undefined: insert_before(
                           b, 0x00100000, nested_sequence(d, undefined=u)),
                       strict=strict)  # fmt: skip

    # 5. SOP class / instance in the command differ from the dataset's.
    other = new_uid("fuzz", "other-instance")
    w.add_body(
        "meta-class-sc", "sop-mismatch", lambda b: b, meta={"MediaStorageSOPClassUID": SC_CLASS}
    )
    w.add_body(
        "meta-class-ct", "sop-mismatch", lambda b: b, meta={"MediaStorageSOPClassUID": CT_CLASS}
    )
    w.add_body(
        "meta-instance-other",
        "sop-mismatch",
        lambda b: b,
        meta={"MediaStorageSOPInstanceUID": other},
    )
    w.add_ds("dataset-class-ct", "sop-mismatch", lambda ds: setattr(ds, "SOPClassUID", CT_CLASS))
    w.add_ds("dataset-class-missing", "sop-mismatch", lambda ds: delattr(ds, "SOPClassUID"))
    w.add_ds("dataset-instance-missing", "sop-mismatch", lambda ds: delattr(ds, "SOPInstanceUID"))
    w.add_ds(
        "dataset-instance-other",
        "sop-mismatch",
        lambda ds: setattr(ds, "SOPInstanceUID", other + ".9"),
    )
    w.add_ds(
        "dataset-instance-trailing-space",
        "sop-mismatch",
        lambda ds: setattr(ds, "SOPInstanceUID", ds.SOPInstanceUID + "1"),
    )
    w.add_ds("study-uid-missing", "sop-mismatch", lambda ds: delattr(ds, "StudyInstanceUID"))
    w.add_ds(
        "study-uid-garbage", "sop-mismatch", lambda ds: setattr(ds, "StudyInstanceUID", "not a uid")
    )

    # 6. Geometry: Rows × Columns overflow and impossible pixel descriptions.
    geometry: list[tuple[str, dict[str, object]]] = [
        ("rows-cols-65535", {"Rows": 65535, "Columns": 65535}),
        ("rows-65535", {"Rows": 65535}), ("cols-65535", {"Columns": 65535}),
        ("rows-0", {"Rows": 0}), ("cols-0", {"Columns": 0}),
        ("rows-cols-10000", {"Rows": 10000, "Columns": 10000}),
        ("bits-allocated-0", {"BitsAllocated": 0}), ("bits-allocated-1", {"BitsAllocated": 1}),
        ("bits-allocated-7", {"BitsAllocated": 7}), ("bits-allocated-64", {"BitsAllocated": 64}),
        ("bits-allocated-65535", {"BitsAllocated": 65535}),
        ("samples-0", {"SamplesPerPixel": 0}), ("samples-3", {"SamplesPerPixel": 3}),
        ("samples-65535", {"SamplesPerPixel": 65535}),
        ("frames-2", {"NumberOfFrames": "2"}),
        ("frames-huge", {"NumberOfFrames": "999999999"}),
        ("frames-negative", {"NumberOfFrames": "-1"}), ("frames-text", {"NumberOfFrames": "x"}),
        ("photometric-rgb", {"PhotometricInterpretation": "RGB"}),
        ("photometric-palette", {"PhotometricInterpretation": "PALETTE COLOR"}),
        ("photometric-empty", {"PhotometricInterpretation": ""}),
        ("photometric-junk", {"PhotometricInterpretation": "XYZ"}),
    ]  # fmt: skip
    for name, attrs in geometry:
        w.add_ds(name, "geometry", lambda ds, a=attrs: [set_raw(ds, k, v) for k, v in a.items()])
    loose: list[tuple[str, dict[str, object]]] = [
        ("bits-stored-99", {"BitsStored": 99}), ("high-bit-99", {"HighBit": 99}),
        ("pixel-representation-5", {"PixelRepresentation": 5}),
        ("bits-stored-0", {"BitsStored": 0}), ("frames-1", {"NumberOfFrames": "1"}),
        ("frames-0", {"NumberOfFrames": "0"}),  # read as one frame by tolerant readers
    ]  # fmt: skip
    for name, attrs in loose:
        w.add_ds(name, "geometry", lambda ds, a=attrs: [set_raw(ds, k, v) for k, v in a.items()],
                 strict=False)  # fmt: skip

    # 7. Pixel data too short.
    n = pixel[4]
    for keep in (0, 1, 2, n // 2, n - 2):
        w.add_ds(f"pixel-data-{keep}-of-{n}", "short-pixels",
                 lambda ds, k=keep: setattr(ds, "PixelData", ds.PixelData[:k]))  # fmt: skip

    # 8. Required attributes missing.
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation",
                    "PixelData", "SamplesPerPixel"):  # fmt: skip
        w.add_ds(f"missing-{keyword}", "missing-attribute",
                 lambda ds, k=keyword: delattr(ds, k))  # fmt: skip
    # The SOP class (CR) says what Modality would: classifying without it is fine.
    for keyword in ("Modality", "BitsStored", "PixelRepresentation", "SeriesInstanceUID",
                    "PatientID",
                    "HighBit", "ImageType", "PatientName"):  # fmt: skip
        w.add_ds(f"missing-{keyword}", "missing-attribute",
                 lambda ds, k=keyword: delattr(ds, k), strict=False)  # fmt: skip

    # 9. Odd values a reader has to survive.
    values: list[tuple[str, dict[str, object]]] = [
        ("window-width-0", {"WindowCenter": "100", "WindowWidth": "0"}),
        ("window-width-negative", {"WindowCenter": "100", "WindowWidth": "-5"}),
        ("window-text", {"WindowCenter": "abc", "WindowWidth": "def"}),
        ("rescale-slope-nan", {"RescaleSlope": "nan", "RescaleIntercept": "0"}),
        ("rescale-slope-inf", {"RescaleSlope": "1e309", "RescaleIntercept": "0"}),
        ("rescale-slope-0", {"RescaleSlope": "0", "RescaleIntercept": "0"}),
        ("rescale-intercept-text", {"RescaleSlope": "1", "RescaleIntercept": "x"}),
        ("padding-value-huge", {"PixelPaddingValue": b"\xff\xff"}),
        ("voi-function-junk", {"VOILUTFunction": "NOPE", "WindowCenter": "1", "WindowWidth": "2"}),
        ("charset-junk", {"SpecificCharacterSet": "ISO_IR 999"}),
        ("instance-number-huge", {"InstanceNumber": "99999999999999"}),
        ("patient-name-binary", {"PatientName": "\x00\x01\x02"}),
    ]  # fmt: skip
    for name, attrs in values:
        w.add_ds(name, "odd-values", lambda ds, a=attrs: [set_raw(ds, k, v) for k, v in a.items()],
                 strict=False)  # fmt: skip

    def bad_lut(ds: Dataset) -> None:
        item = Dataset()
        item.LUTDescriptor = [0, 0, 16]
        item.LUTData = b""
        ds.VOILUTSequence = [item]

    w.add_ds("voi-lut-empty", "odd-values", bad_lut, strict=False)

    # 10. Corrupt compressed streams (JPEG 2000, JPEG baseline, RLE).
    for codec, frame, syntax in _compressed_frames(base):
        mutations: list[tuple[str, Callable[[bytes], bytes], bool]] = [
            ("empty", lambda f: b"", True),
            ("zeros", lambda f: b"\0" * len(f), True),
            ("random", lambda f: random.Random(seed).randbytes(len(f)), True),
            ("truncated-10", lambda f: f[: len(f) // 10], False),
            ("truncated-50", lambda f: f[: len(f) // 2], False),
            ("truncated-header", lambda f: f[:20], True),
            ("header-zeroed", lambda f: b"\0" * 32 + f[32:], True),
            ("dims-huge", _huge_dims, False),
        ]  # fmt: skip
        for i in range(6):
            mutations.append((f"flips-{i}", lambda f, i=i: _flip(f, random.Random(seed + i), 8),
                              False))  # fmt: skip
        for name, mutate, strict in mutations:
            w.add_ds(f"{codec}-{name}", "corrupt-compressed",
                     lambda ds, m=mutate, f=frame, c=codec: _set_frame(ds, m(f), c), strict=strict,
                     syntax=syntax)  # fmt: skip
        w.add_ds(f"{codec}-labelled-explicit", "corrupt-compressed",
                 lambda ds, f=frame, c=codec: _set_frame(ds, f, c), syntax=ExplicitVRLittleEndian,
                 strict=False)  # fmt: skip

    # 11. Random byte flips in the header (anything may happen; the node must answer).
    for i in range(60):
        r = random.Random(seed * 1000 + i)
        w.add_body(
            f"header-flip-{i}",
            "header-flips",
            lambda b, r=r: _flip(b, r, r.randint(1, 4), limit=pixel_start),
            strict=False,
        )

    # 12. Deflate: a dataset that inflates to far more than the node accepts.
    bomb_uid = new_uid("fuzz", "deflate-bomb")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CR_CLASS
    meta.MediaStorageSOPInstanceUID = bomb_uid
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    w.add_bytes("deflate-bomb-4000m", "deflate-bomb", file_with(meta, deflate_bomb(4000)), bomb_uid,
                strict=True)  # fmt: skip
    w.add_bytes("deflate-garbage", "deflate-bomb", file_with(meta, b"\x78\x9c garbage"), bomb_uid,
                strict=True)  # fmt: skip
    return w.cases


def deflate_bomb(megabytes: int) -> bytes:
    """A raw-deflate stream of a private OB element `megabytes` MiB long (all zeros).

    Each MiB is compressed once after a full flush (which resets the compressor), so the
    same compressed block repeated `megabytes` times is a valid stream: cheap to make.
    """
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(element(0x00091010, b"OB", b"", length=megabytes * 1024 * 1024))
    head += comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(b"\0" * (1024 * 1024)) + comp.flush(zlib.Z_FULL_FLUSH)
    return head + block * megabytes + comp.flush()


def set_raw(ds: Dataset, keyword: str, value: object) -> None:
    """Set an attribute to exactly `value` (text written as is, even if its VR forbids it)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    if not isinstance(value, str | bytes):
        setattr(ds, keyword, value)
        return
    tag = Tag(tag_for_keyword(keyword))
    raw = value if isinstance(value, bytes) else value.encode("latin-1")
    if len(raw) % 2:
        raw += b" "
    ds._dict[tag] = RawDataElement(
        tag, dictionary_VR(tag).split(" ")[0], len(raw), raw, 0, False, True
    )


def _flip(data: bytes, rng: random.Random, count: int, *, limit: int | None = None) -> bytes:
    buf = bytearray(data)
    if not buf:
        return data
    for _ in range(count):
        pos = rng.randrange(min(len(buf), limit or len(buf)))
        buf[pos] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _huge_dims(frame: bytes) -> bytes:
    buf = bytearray(frame)
    siz = frame.find(b"\xff\x51")  # JPEG 2000 SIZ: Lsiz Rsiz Xsiz Ysiz
    if siz >= 0:
        struct.pack_into(">II", buf, siz + 6, 0x7FFFFFF0, 0x7FFFFFF0)
        return bytes(buf)
    sof = frame.find(b"\xff\xc0")  # JPEG SOF0: Lf P Y X
    if sof >= 0:
        struct.pack_into(">HH", buf, sof + 5, 65535, 65535)
        return bytes(buf)
    struct.pack_into("<I", buf, 0, 15)  # RLE header: 15 segments
    return bytes(buf)


def _set_frame(ds: Dataset, frame: bytes, codec: str) -> None:
    if codec == "jpeg":
        _as_8bit(ds)
    ds.PixelData = encapsulate([frame]) if frame else encapsulate([b"\0\0"])[:16]
    ds["PixelData"].VR = "OB"


def _as_8bit(ds: Dataset) -> None:
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PhotometricInterpretation = "MONOCHROME2"


def _compressed_frames(base: Path) -> list[tuple[str, bytes, str]]:
    from PIL import Image
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(base)
    frames = []
    j2k = ds.copy()
    j2k.compress(JPEG2000Lossless)
    frames.append(("j2k", next(generate_frames(j2k.PixelData, number_of_frames=1)),
                   JPEG2000Lossless))  # fmt: skip
    rle = pydicom.dcmread(base)
    rle.compress(RLELossless)
    frames.append(("rle", next(generate_frames(rle.PixelData, number_of_frames=1)), RLELossless))
    pixels = ds.pixel_array.astype(np.float32)
    eight = (255 * (pixels - pixels.min()) / max(1.0, float(np.ptp(pixels)))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(eight).save(buf, format="JPEG", quality=90)
    frames.append(("jpeg", buf.getvalue(), JPEGBaseline8Bit))
    return frames
