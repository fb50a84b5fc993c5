"""What the output objects copy from a source image, made fit to be written.

The SR and the SC copy the patient and study modules, Specific Character Set and a few image
attributes (Modality, Laterality, Patient Orientation, …) from the radiograph they describe.
A source the node could read and classify can still carry what highdicom or a validator
refuses in an output: no Modality, an empty first Specific Character Set value
(`["", "ISO 2022 IR 87"]`, valid DICOM), an impossible date, a 70-character LO, a PN with
six components, an element whose VR disagrees with the dictionary. Tolerant when reading,
strict when writing: `output_header` gives both builders one normalised header, and
`SourceRejected` says, in words an operator understands, why a source cannot be reported at
all (a missing or malformed identifying UID). Pure: takes a Dataset, returns a new one; the
source is not modified beyond pydicom's own decoding of raw elements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from pydicom import Dataset
from pydicom import config as pydicom_config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
)
from pydicom.valuerep import DA, DT, TM, PersonName, validate_value

from dicomnode.imaging.reasons import reason

#: Written when the source's character set cannot be carried (code extensions, unknown terms)
#: or does not hold the copied text: UTF-8 holds every repertoire DICOM allows.
UTF8 = "ISO_IR 192"
#: Single-valued terms (PS3.3 C.12.1.1.2, Table C.12-2) that outputs keep. GB18030 and GBK
#: are valid too but dciodvfy cannot check their text, so outputs carry such text as UTF-8;
#: ISO_IR 13 (JIS X 0201) likewise, whose Python codec also encodes kanji.
_SINGLE_BYTE_TERMS = frozenset(
    {
        "ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110", "ISO_IR 144", "ISO_IR 127",
        "ISO_IR 126", "ISO_IR 138", "ISO_IR 148", "ISO_IR 203", "ISO_IR 166", UTF8,
    }
)  # fmt: skip
_DEFAULT_TERMS = frozenset({"", "ISO_IR 6", "ISO 2022 IR 6"})
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)  # fmt: skip
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})
#: Identifying UIDs without which a source cannot be referenced (Type 1 in every output).
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
#: Patient/study attributes the outputs must have (Type 2): empty when the source has none or
#: an invalid one. highdicom reads them with attribute access.
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
#: Enumerated values (PS3.3) highdicom or the validators check in what outputs copy.
_ENUMERATED: dict[str, frozenset[str]] = {
    "PatientSex": frozenset({"M", "F", "O"}),
    "Laterality": frozenset({"R", "L"}),
    "ImageLaterality": frozenset({"R", "L", "U", "B"}),
    "AnatomicalOrientationType": frozenset({"BIPED", "QUADRUPED"}),
    "LossyImageCompression": frozenset({"00", "01"}),
    "PatientSexNeutered": frozenset({"ALTERED", "UNALTERED"}),
    "QualityControlSubject": frozenset({"YES", "NO"}),
}
#: Patient (and Patient Study) Type 2C attributes an animal patient must have, maybe empty.
_ANIMAL_TYPE2C = ("PatientBreedDescription", "PatientBreedCodeSequence",
                  "BreedRegistrationSequence", "PatientSexNeutered")  # fmt: skip
#: At least one of these is required for an animal; both present (empty) when neither has a value.
_RESPONSIBLE = ("ResponsiblePerson", "ResponsibleOrganization")
_SPECIES = ("PatientSpeciesDescription", "PatientSpeciesCodeSequence")
#: A UID's first arc (ISO/ITU-T joint or ISO): what dciodvfy accepts as a root.
_UID_ROOT_ARCS = ("1.", "2.")
#: highdicom refuses to reference an image of these modalities (they are not images).
_NOT_AN_IMAGE_MODALITY = frozenset(
    {"SEG", "SR", "DOC", "KO", "PR", "PLAN", "RWV", "REG", "FID", "RTDOSE", "RTPLAN",
     "RTRECORD", "RTSTRUCT"}
)  # fmt: skip
#: highdicom references a source image only if it has one of these.
_PIXEL_DESCRIPTION = ("Rows", "Columns", "SamplesPerPixel", "PixelRepresentation")
#: Modality a source lacking one is described with (the SOP class says what it is).
_MODALITY_OF_CLASS: dict[str, str] = {
    ComputedRadiographyImageStorage: "CR",
    DigitalXRayImageStorageForPresentation: "DX",
    DigitalXRayImageStorageForProcessing: "DX",
}
_NAMES = {
    "SOPClassUID": "SOP Class UID",
    "SOPInstanceUID": "SOP Instance UID",
    "StudyInstanceUID": "Study Instance UID",
    "SeriesInstanceUID": "Series Instance UID",
}
T = TypeVar("T")
R = TypeVar("R")
_PIXEL_DATA = 0x7FE00010
_MAX_DEPTH = 4


class SourceRejected(ValueError):
    """A source image whose outputs cannot be written; `reason` is operator-readable, PHI-free."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def output_header(source: Dataset) -> Dataset:
    """The attributes outputs copy from `source`, each valid for writing.

    Kept: public attributes before the pixel data (sequences item by item) whose values are
    valid for their VR, multiplicity and enumerated values; elements that cannot be decoded,
    with a VR other than the dictionary's, or with invalid values are left out (Type 2
    patient/study attributes, and an animal's Type 2C ones, then present and empty). Added:
    Modality from the SOP class when missing, the SOP Class UID from the file meta when
    missing. Specific Character Set: the source's when an output can carry it and it holds
    the copied text, else ISO_IR 192. Raises `SourceRejected` when the source cannot be
    referenced: an identifying UID missing or malformed, an unknown SOP class, no image pixel
    description.
    """
    header = _copy_items(source, depth=0)
    if "SOPClassUID" not in header:
        meta_class = _meta_sop_class(source)
        if meta_class:
            header.SOPClassUID = meta_class
    for keyword in REQUIRED_UIDS:
        uid = str(header.get(keyword) or "")
        if not uid.startswith(_UID_ROOT_ARCS):
            code = "source_invalid_uid" if keyword in source else "source_no_uid"
            raise SourceRejected(reason(code, attribute=_NAMES[keyword]))
    if UID(str(header.SOPClassUID)).type != "SOP Class":
        raise SourceRejected(reason("source_unknown_class"))
    if not any(keyword in header for keyword in _PIXEL_DESCRIPTION):
        raise SourceRejected(reason("source_no_pixel_description"))
    if str(header.get("Modality") or "") in ("", *_NOT_AN_IMAGE_MODALITY):
        # Only what the builders read: no output copies the source's Modality.
        header.Modality = _MODALITY_OF_CLASS.get(str(header.SOPClassUID), "OT")
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in header:
            setattr(header, keyword, None)
    if any(header.get(keyword) for keyword in _SPECIES):
        _add_animal_type2c(header)
    _set_character_set(header, source.get("SpecificCharacterSet"))
    return header


def _add_animal_type2c(header: Dataset) -> None:
    """An animal patient's Type 2C attributes, empty where the source has none (dciodvfy
    requires them present; an empty value is what "unknown" is in DICOM)."""
    needed = list(_ANIMAL_TYPE2C)
    if not any(header.get(keyword) for keyword in _RESPONSIBLE):
        needed += _RESPONSIBLE
    for keyword in needed:
        tag = tag_for_keyword(keyword)
        if tag is not None and keyword not in header:
            empty: Any = [] if keyword.endswith("Sequence") else None
            header.add(DataElement(tag, dictionary_VR(tag), empty))


def blanked(header: Dataset, keywords: Iterable[str]) -> Dataset:
    """`header` with `keywords` present but empty (other elements shared, `header` untouched):
    highdicom quotes odd person names in warnings, so the builders set them afterwards."""
    emptied = set(keywords)
    copy = Dataset()
    for element in header:
        if element.keyword in emptied:
            copy.add(DataElement(element.tag, element.VR, None))
        else:
            copy.add(element)
    return copy


def describe_failure(exc: BaseException) -> str:
    """Why an output could not be built from a source, for an operator (no values, no PHI)."""
    if isinstance(exc, SourceRejected):
        return exc.reason
    name = getattr(exc, "name", None) if isinstance(exc, AttributeError) else None
    if isinstance(name, str) and tag_for_keyword(name) is not None:
        return reason("source_lacks", attribute=name)
    return reason("builder_refused", error=type(exc).__name__)


def build_leaving_out(
    members: Sequence[T],
    build: Callable[[Sequence[T]], R],
    *,
    on_refused: Callable[[Exception], None] = lambda exc: None,
) -> tuple[R | None, dict[int, str]]:
    """`build(members)`; if the builder refuses, the build over the members it accepts one by
    one, and why each other member is left out (by index, `describe_failure`). When no member
    can be built (or they fail only together) the result is None and every member has a
    reason. One odd source never blocks the others' output. `on_refused` sees each refusal
    that is not a `SourceRejected` (the caller logs it: those reasons point to the log)."""

    def attempt(chosen: Sequence[T]) -> R | Exception:
        try:
            return build(chosen)
        except Exception as exc:  # a pure builder refused its input: returned, and explained
            if not isinstance(exc, SourceRejected):
                on_refused(exc)
            return exc

    whole = attempt(members)
    if not isinstance(whole, Exception):
        return whole, {}
    failure: Exception = whole
    left_out: dict[int, str] = {}
    for index, member in enumerate(members):
        alone = attempt([member])
        if isinstance(alone, Exception):
            left_out[index] = describe_failure(alone)
    kept = [m for i, m in enumerate(members) if i not in left_out]
    if kept and left_out:
        rest = attempt(kept)
        if not isinstance(rest, Exception):
            return rest, left_out
        failure = rest  # they fail only together: explained as a whole below
    reason = describe_failure(failure)
    return None, {i: left_out.get(i, reason) for i in range(len(members))}


# --- reading tolerantly ---------------------------------------------------------------------------


def _copy_items(source: Dataset, *, depth: int) -> Dataset:
    """The public elements of `source` (before the pixel data) that decode and are valid for
    writing; sequences are copied item by item the same way, down to `_MAX_DEPTH`."""
    header = Dataset()
    for element in _readable_elements(source):
        if element.VR == "SQ":
            if depth < _MAX_DEPTH and isinstance(element.value, Iterable):
                items = [_copy_items(item, depth=depth + 1) for item in element.value]
                header.add(DataElement(element.tag, "SQ", [i for i in items if len(i)]))
        elif _writable(element):
            header.add(_fresh_names(element) if element.VR == "PN" else element)
    return header


def _readable_elements(source: Dataset) -> Iterable[DataElement]:
    """Public elements before the pixel data that decode; the rest is skipped."""
    for tag in list(source.keys()):
        if tag >= _PIXEL_DATA or tag.is_private or tag.group in (0x0002, 0xFFFE):
            continue
        if tag == 0x00080005:  # Specific Character Set: chosen for the output
            continue
        try:
            element = source[tag]
        except Exception:  # pydicom raises many types on a damaged element
            continue
        yield element


def _writable(element: DataElement) -> bool:
    try:
        expected = dictionary_VR(element.tag)
    except KeyError:
        return False  # not in the dictionary: nothing an output copies
    if expected != element.VR and element.VR not in expected.split(" or "):
        return False
    values = _values(element.value)
    if not values:
        return True
    if not _multiplicity_fits(len(values), dictionary_VM(element.tag)):
        return False
    allowed = _ENUMERATED.get(element.keyword)
    if allowed is not None and any(str(v) not in allowed for v in values):
        return False
    try:
        for value in values:
            _check(element.VR, value)
    except Exception:  # validators raise ValueError, TypeError, OverflowError, …
        return False
    return True


def _fresh_names(element: DataElement) -> DataElement:
    """A new PN element from the names' text: a PersonName keeps the bytes and character set
    it was read or first written with, and would carry them into an output that declares
    another character set (the source's object is not touched)."""
    values = [PersonName(str(v)) for v in _values(element.value)]
    value = values if len(values) > 1 else (values[0] if values else None)
    return DataElement(element.tag, "PN", value)


def _multiplicity_fits(count: int, vm: str) -> bool:
    """`count` values within the dictionary's VM ("1", "2", "1-3", "1-n", "2-2n", …)."""
    low, _, high = vm.partition("-")
    try:
        if count < int(low):
            return False
        return high.endswith("n") or count <= int(high or low)
    except ValueError:
        return True  # a VM pydicom spells otherwise: not ours to judge


def _values(value: Any) -> list[Any]:
    if value is None or value == "" or value == b"":
        return []
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [value]


def _check(vr: str, value: Any) -> None:
    """Raise if `value` cannot be written as `vr` (pydicom's rules, dates and names checked)."""
    if isinstance(value, bytes):
        if vr not in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
            raise ValueError("undecoded value")
        return
    text = str(value)
    # pydicom's validators take the text of string VRs (not DSfloat, IS, PersonName objects).
    validate_value(vr, text if vr in _STRING_VRS else value, pydicom_config.RAISE)
    if vr == "DA":
        DA(text)
    elif vr == "TM":
        TM(text)
    elif vr == "DT":
        DT(text)
    elif vr == "PN":
        groups = text.split("=")
        if len(groups) > 3 or any(
            len(g) > 64 or len(g.split("^")) > 5 or any(c in g for c in "\\\r\n") for g in groups
        ):
            raise ValueError("malformed person name")
    if vr in _TEXT_VRS and any(ord(c) < 0x20 and c not in "\r\n\t\f" for c in text):
        raise ValueError("control characters")  # an escape left in decoded text: undecodable


def _meta_sop_class(source: Dataset) -> str:
    meta = getattr(source, "file_meta", None)
    value = meta.get("MediaStorageSOPClassUID") if meta is not None else None
    try:
        validate_value("UI", value, pydicom_config.RAISE)
    except Exception:  # any malformed value: no usable class
        return ""
    return str(value or "")


# --- the character set ----------------------------------------------------------------------------


def _set_character_set(header: Dataset, declared: Any) -> None:
    """Keep the source's single-valued character set if it holds the copied text, else UTF-8;
    the default repertoire (no element) when the text is plain ASCII and the source used it."""
    terms = [str(v).strip() for v in _values(declared)] or [""]
    texts = [str(e.value) for e in header if e.VR in _TEXT_VRS and e.value not in (None, "")]
    if all(term in _DEFAULT_TERMS for term in terms):
        if all(text.isascii() for text in texts):
            return
        header.SpecificCharacterSet = UTF8
        return
    if len(terms) == 1 and terms[0] in _SINGLE_BYTE_TERMS and _holds(terms[0], texts):
        header.SpecificCharacterSet = terms[0]
        return
    header.SpecificCharacterSet = UTF8


def _holds(term: str, texts: list[str]) -> bool:
    codec = python_encoding.get(term)
    if codec is None:
        return False
    try:
        for text in texts:
            text.encode(codec)
    except (UnicodeError, LookupError):
        return False
    return True


__all__ = [
    "REQUIRED_UIDS",
    "TYPE2_PATIENT_STUDY",
    "UTF8",
    "SourceRejected",
    "blanked",
    "build_leaving_out",
    "describe_failure",
    "output_header",
]
