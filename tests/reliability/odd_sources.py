"""A seeded mutator of real radiograph headers: valid-but-unusual and damaged sources for the
SR and SC builders (issue 17 item 3).

Each case starts from a real header (pydicom-data RG3 and RG1 CRs, deid-data's cat DX) and
applies one to three mutations drawn from: attributes deleted or emptied (Type 1, 2 and 3
alike), every Specific Character Set the standard allows (PS3.3 C.12.1.1.2: single-byte terms,
ISO 2022 code extensions with an empty or explicit first value, UTF-8, GB18030/GBK) with names
written in that repertoire, odd values (impossible dates and times, over-long strings, PN with
too many components, control characters, bad enumerations), elements written with a VR other
than the dictionary's, and bit flips in the encoded header. The mutated dataset is encoded and
read back, so the builders see what the node's reader gives them. Same seed, same cases.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from tests.reliability.malformed import _flip, set_raw
from tests.support.data import RG1_UNCR, RG3_UNCR, cat_dx, testdata

#: Character sets (value list) and a patient name in their repertoire.
CHARACTER_SETS: list[tuple[list[str], str]] = [
    ([""], "Doe^John"),
    (["ISO_IR 6"], "Doe^John"),
    (["ISO 2022 IR 6"], "Doe^John"),
    (["ISO_IR 100"], "Müller^Jürgen"),
    (["ISO_IR 101"], "Dvořák^Antonín"),
    (["ISO_IR 109"], "Ġużeppi^Ċensu"),
    (["ISO_IR 110"], "Šķēle^Ģirts"),
    (["ISO_IR 144"], "Шевченко^Тарас"),
    (["ISO_IR 127"], "قباني^لنزار"),
    (["ISO_IR 126"], "Διονυσιος^Γιαννης"),
    (["ISO_IR 138"], "שרון^דבורה"),
    (["ISO_IR 148"], "Çelik^Ağır"),
    (["ISO_IR 203"], "Dupont^Œuvre€"),
    (["ISO_IR 13"], "ﾔﾏﾀﾞ^ﾀﾛｳ"),
    (["ISO_IR 166"], "สมชาย^ใจดี"),
    (["ISO_IR 192"], "Wang^XiaoDong=王^小东"),
    (["GB18030"], "Wang^XiaoDong=王^小东"),
    (["GBK"], "Wang^XiaoDong=王^小东"),
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    (["ISO 2022 IR 6", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎"),
    (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"),
    (["", "ISO 2022 IR 87", "ISO 2022 IR 159"], "Yamada^Tarou=山田^太郎"),
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
    (["", "ISO 2022 IR 58"], "Wang^XiaoDong=王^小东"),
    (["ISO 2022 IR 100"], "Müller^Jürgen"),
    (["ISO 2022 IR 100", "ISO 2022 IR 126"], "Müller^Jürgen=Διονυσιος"),
    (["ISO 2022 IR 144"], "Шевченко^Тарас"),
    (["\\"], "Doe^John"),
    (["BOGUS"], "Doe^John"),
]

#: Attributes an output copies or a builder reads: deleted or emptied by the mutator.
TOUCHED = (
    "Modality", "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
    "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID", "StudyDescription",
    "SeriesDescription", "SeriesNumber", "InstanceNumber", "Laterality", "ImageLaterality",
    "PatientOrientation", "BodyPartExamined", "ViewPosition", "Manufacturer",
    "SpecificCharacterSet", "SeriesInstanceUID", "SOPClassUID", "AnatomicalOrientationType",
    "LossyImageCompression", "PatientAge", "ContentDate", "ContentTime", "SeriesDate",
)  # fmt: skip
#: (keyword, raw text) written as is, whatever the VR allows.
ODD_VALUES: list[tuple[str, str]] = [
    ("PatientBirthDate", "20241399"), ("StudyDate", "2024"), ("StudyDate", "19000230"),
    ("StudyTime", "256161"), ("StudyTime", "12:30"), ("SeriesDate", "yesterday"),
    ("PatientName", "a^b^c^d^e^f"), ("PatientName", "x" * 70), ("PatientName", "A=B=C=D"),
    ("ReferringPhysicianName", "Dr\x01Who"), ("AccessionNumber", "A" * 40),
    ("StudyID", "S" * 30), ("PatientID", "id\\with\\backslashes"), ("StudyDescription", "d" * 90),
    ("PatientSex", "Q"), ("PatientSex", "female"), ("Laterality", "X"), ("Laterality", "r"),
    ("ImageLaterality", "LEFT"), ("PatientOrientation", "A\\B\\C"),
    ("PatientOrientation", "Z\\Q"), ("PatientOrientation", "AL\\F"), ("BodyPartExamined", "hand"),
    ("BodyPartExamined", "CHEST"), ("BodyPartExamined", "WAY TOO LONG BODY PART"),
    ("InstanceNumber", "abc"), ("InstanceNumber", "99999999999999"), ("SeriesNumber", "-3"),
    ("PatientAge", "42"), ("Modality", "XYZ"), ("Modality", "cr"), ("Modality", "DX\\CR"),
    ("AnatomicalOrientationType", "QUADRUPED"), ("AnatomicalOrientationType", "BIPEDAL"),
    ("LossyImageCompression", "01"), ("LossyImageCompression", "2"),
    ("StudyDescription", "Röntgen Hand"), ("SeriesDescription", "\x1b$Bbroken"),
    ("ContentDate", "20240230"), ("SeriesInstanceUID", "1.2.abc"),
    ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.1"),
]  # fmt: skip
#: (keyword, VR) written with a VR other than the dictionary's.
ODD_VRS: list[tuple[str, str]] = [
    ("StudyDate", "LO"), ("PatientName", "LO"), ("PatientName", "UN"), ("Modality", "UN"),
    ("PatientID", "UT"), ("StudyTime", "DS"), ("InstanceNumber", "US"), ("Laterality", "SH"),
    ("AccessionNumber", "UN"), ("PatientSex", "OB"),
]  # fmt: skip


@dataclass(frozen=True)
class Base:
    name: str
    header: Dataset  # without pixel data
    path: Path


@dataclass(frozen=True)
class Case:
    index: int
    base: str
    mutations: tuple[str, ...]
    data: bytes  # the encoded header


def bases() -> list[Base]:
    """The real radiographs the cases start from."""
    found = [("RG3 CR", testdata(RG3_UNCR)), ("RG1 CR", testdata(RG1_UNCR)), ("cat DX", cat_dx())]
    return [Base(n, pydicom.dcmread(p, stop_before_pixels=True), p) for n, p in found]


def generate(count: int, *, seed: int = 17) -> list[Case]:
    rng = random.Random(seed)
    sources = bases()
    cases = []
    for index in range(count):
        base = sources[index % len(sources)]
        ds = _copy(base.header)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = (
            f"1.2.826.0.1.3680043.8.498.17.9.{seed}.{index}"
        )
        names = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            name, mutate = rng.choice(MUTATIONS)
            names.append(mutate(ds, rng) or name)
        data = _encode(ds)
        if rng.random() < 0.15:
            data = flip_header(data, rng)
            names.append("bit flips")
        cases.append(Case(index, base.name, tuple(names), data))
    return cases


def read(case: Case) -> Dataset | None:
    """The case as the node's reader gives it (None: pydicom cannot read it at all)."""
    try:
        return pydicom.dcmread(io.BytesIO(case.data), force=True)
    except Exception:  # a flipped header pydicom refuses: the node fails it when reading
        return None


def flip_header(data: bytes, rng: random.Random, *, within: int | None = None) -> bytes:
    """A few bit flips after the file meta group (the part the node classifies from), in its
    first `within` bytes if given (a file's header before its pixel data)."""
    start = 132 + 12 + int.from_bytes(data[140:144], "little")  # preamble, DICM, group length
    limit = within - start if within else None
    return data[:start] + _flip(data[start:], rng, rng.randint(1, 6), limit=limit)


# --- mutations ------------------------------------------------------------------------------------


def _delete(ds: Dataset, rng: random.Random) -> str:
    keyword = rng.choice(TOUCHED)
    if keyword in ds:
        delattr(ds, keyword)
    return f"delete {keyword}"


def _empty(ds: Dataset, rng: random.Random) -> str:
    keyword = rng.choice(TOUCHED)
    set_raw(ds, keyword, "")
    return f"empty {keyword}"


def _character_set(ds: Dataset, rng: random.Random) -> str:
    terms, name = rng.choice(CHARACTER_SETS)
    ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
    try:
        ds.PatientName = name
        ds.StudyDescription = name.split("=")[-1].replace("^", " ")
        _encode(ds)  # names pydicom cannot encode in the set are replaced by plain ones
    except Exception:
        ds.PatientName = "Doe^John"
        ds.StudyDescription = "Hand"
    return f"character set {terms}"


def _odd_value(ds: Dataset, rng: random.Random) -> str:
    keyword, value = rng.choice(ODD_VALUES)
    set_raw(ds, keyword, value)
    return f"{keyword}={value[:20]!r}"


def _odd_vr(ds: Dataset, rng: random.Random) -> str:
    keyword, vr = rng.choice(ODD_VRS)
    tag = Tag(tag_for_keyword(keyword))
    value = str(ds.get(keyword) or "X").encode("latin-1", "replace")
    if len(value) % 2:
        value += b" "
    ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)
    return f"{keyword} as {vr}"


MUTATIONS: list[tuple[str, Callable[[Dataset, random.Random], str | None]]] = [
    ("delete", _delete),
    ("empty", _empty),
    ("character set", _character_set),
    ("character set", _character_set),
    ("odd value", _odd_value),
    ("odd value", _odd_value),
    ("odd VR", _odd_vr),
]


def _copy(header: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(_encode(header)), force=True)


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
