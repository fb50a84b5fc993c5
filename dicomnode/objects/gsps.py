"""The finding a viewer can toggle: a Grayscale Softcopy Presentation State on the source image.

Any PACS viewer applies a GSPS to the original pixels and lets the reader hide it, which a
burned-in Secondary Capture cannot offer. One per classified positive or doubt image with at
least one region (a negative image gets none), SOP class 1.2.840.10008.5.1.4.1.1.11.1, built
with highdicom:

    Graphic Layer "AI_FINDINGS" (red)
      Graphic Annotation on the source image (units PIXEL, DICOM's image-relative convention)
        one closed POLYLINE per suspected region (`imaging.regions`, in source pixels)
        the text "AI: fracture suspected 0.87", top left, its anchor at the hottest point;
        prefixed "UNTRAINED DEMO - " for the demo model (ASCII: the
        source's character set may have no dash)

The source's own display (Modality LUT, first window, MONOCHROME1) is what highdicom copies
into the state, so the image looks as it does without it. Patient and study modules come from
the source, normalised by `objects.sources.output_header`. Pure: values in, a Dataset out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import highdicom as hd
from pydicom import Dataset

from dicomnode import MANUFACTURER
from dicomnode.imaging.regions import Region
from dicomnode.model.card import UNTRAINED_LABEL, ModelCard
from dicomnode.objects.codes import algorithm_equipment, software_versions
from dicomnode.objects.sc import UNPAIRED_BODY_PARTS
from dicomnode.objects.series import GSPS_SERIES_DESCRIPTION, GSPS_SERIES_NUMBER
from dicomnode.objects.sources import blanked, output_header

if TYPE_CHECKING:
    from dicomnode.model.classifier import Prediction

LAYER_NAME = "AI_FINDINGS"
CONTENT_LABEL = "AI_FRACTURE"
#: CIELab of the outline and text: a saturated red, as the SC banner of a positive result.
LAYER_COLOUR = (53.0, 80.0, 67.0)
#: The text box: top left of the image, this fraction of its width and height.
TEXT_BOX = (0.6, 0.06)

_PERSON_NAMES = ("PatientName", "ReferringPhysicianName")


def annotation_text(outcome: str, probability: float, *, trained: bool = True) -> str:
    """The short sentence shown next to the outline (no PHI)."""
    p = f"{probability:.2f}"
    sentences = {
        "positive": f"AI: fracture suspected {p}",
        "doubt": f"AI: fracture indeterminate {p} - review",
    }
    try:
        text = sentences[str(outcome)]
    except KeyError:
        raise ValueError(f"no finding to annotate for outcome {outcome!r}") from None
    return text if trained else f"{UNTRAINED_LABEL} - {text}"


def build_gsps(
    *,
    source: Dataset,
    prediction: Prediction,
    card: ModelCard,
    sop_instance_uid: str,
    series_instance_uid: str,
    instance_number: int,
) -> hd.pr.GrayscaleSoftcopyPresentationState | None:
    """The presentation state outlining `prediction.regions` on `source`, or None when there
    is nothing to show (a negative outcome, or no region)."""
    if str(prediction.outcome) == "negative" or not prediction.regions:
        return None
    header = output_header(source)
    rows, columns = int(header.Rows), int(header.Columns)
    reference = blanked(header, _PERSON_NAMES)
    text = annotation_text(str(prediction.outcome), prediction.probability, trained=card.trained)
    layer = hd.pr.GraphicLayer(
        layer_name=LAYER_NAME,
        order=1,
        description=("" if card.trained else f"{UNTRAINED_LABEL} - ")
        + "AI fracture triage regions; not a diagnosis",
        display_color=hd.color.CIELabColor(*LAYER_COLOUR),
    )
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[reference],
        graphic_layer=layer,
        graphic_objects=[
            _outline(region, rows=rows, columns=columns) for region in prediction.regions
        ],
        text_objects=[_label(text, prediction.regions[0], rows=rows, columns=columns)],
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[reference],
        series_instance_uid=series_instance_uid,
        series_number=GSPS_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=card.display_name,
        software_versions=software_versions(card)[0],
        device_serial_number=card.version[:64],
        content_label=CONTENT_LABEL,
        content_description="AI fracture triage findings; not a diagnosis",
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        contributing_equipment=[algorithm_equipment(card)],
    )
    gsps.SeriesDescription = GSPS_SERIES_DESCRIPTION
    gsps.add_new("SoftwareVersions", "LO", software_versions(card))
    body_part = str(header.get("BodyPartExamined") or "").upper()
    if body_part:  # tells a validator (and a viewer) whether Laterality applies
        gsps.BodyPartExamined = body_part
    if body_part not in UNPAIRED_BODY_PARTS:  # General Series Laterality, Type 2C (as the SC)
        laterality = header.get("Laterality") or header.get("ImageLaterality")
        gsps.add_new("Laterality", "CS", laterality if laterality in ("R", "L") else None)
    for keyword in _PERSON_NAMES:
        setattr(gsps, keyword, header.get(keyword))
    return gsps


def _outline(region: Region, *, rows: int, columns: int) -> hd.pr.GraphicObject:
    return hd.pr.GraphicObject(
        graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
        graphic_data=region.in_pixels(rows=rows, columns=columns),
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        is_filled=False,
    )


def _label(text: str, region: Region, *, rows: int, columns: int) -> hd.pr.TextObject:
    width, height = TEXT_BOX
    return hd.pr.TextObject(
        text_value=text,
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        bounding_box=(0.0, 0.0, columns * width, rows * height),
        anchor_point=region.peak_in_pixels(rows=rows, columns=columns),
        anchor_point_visible=True,
        text_justification=hd.pr.TextJustificationValues.LEFT,
    )
