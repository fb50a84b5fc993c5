"""Which datasets are radiographs to classify (SOP class, modality, size, own output)."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import (
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
    SecondaryCaptureImageStorage,
)

from dicomnode import MANUFACTURER
from dicomnode.imaging.header import safe_code, tag_int, tag_text
from dicomnode.imaging.reasons import reason

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


def _uid_label(uid: str) -> str:
    """The standard name of a well-known UID ("" if unknown); never the UID itself."""
    known = UID(uid)
    if not known.name or known.name == uid:
        return ""
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
    refusal = _class_eligibility(ds, uid_root=uid_root)
    if refusal is not None or not min_size:
        return refusal
    rows, columns = tag_int(ds, "Rows"), tag_int(ds, "Columns")
    if rows is None or columns is None or rows <= 0 or columns <= 0:
        return None  # no geometry: decoding refuses it with its own reason
    return too_small(rows=rows, columns=columns, min_size=min_size)


def too_small(*, rows: int, columns: int, min_size: int) -> str | None:
    """The reason to skip an image with fewer than `min_size` rows or columns, else None."""
    if rows < min_size or columns < min_size:
        return reason("too_small", rows=rows, columns=columns, min_size=min_size)
    return None


def _class_eligibility(ds: Dataset, *, uid_root: str) -> str | None:
    """The SOP class / modality / own-output part of `eligibility`."""
    manufacturer = tag_text(ds, "Manufacturer")
    instance_uid = tag_text(ds, "SOPInstanceUID")
    root = uid_root.strip().rstrip(".")
    if manufacturer.casefold() == MANUFACTURER.casefold() or (
        root and (instance_uid == root or instance_uid.startswith(root + "."))
    ):
        return reason("own_output")
    sop_class = tag_text(ds, "SOPClassUID")
    if not sop_class:
        file_meta = getattr(ds, "file_meta", None)
        sop_class = tag_text(file_meta, "MediaStorageSOPClassUID") if file_meta else ""
    if not sop_class:
        return reason("no_sop_class")
    modality = tag_text(ds, "Modality").upper()
    if sop_class in _MAMMOGRAPHY_CLASSES or modality == "MG":
        return reason("mammography")
    if sop_class in _DENTAL_CLASSES or modality in ("IO", "PX"):
        return reason("dental")
    if sop_class in RADIOGRAPH_CLASSES:
        return None
    if sop_class == SecondaryCaptureImageStorage:
        if modality not in RADIOGRAPHIC_MODALITIES:
            return reason("sc_modality", modality=safe_code(modality))
        if tag_text(ds, "ConversionType").upper() == "SYN":
            return reason("synthetic_sc")
        return None
    if modality and modality not in RADIOGRAPHIC_MODALITIES:
        return reason("modality", modality=safe_code(modality))
    label = _uid_label(sop_class)
    return reason("sop_class", sop_class=label) if label else reason("unknown_sop_class")
