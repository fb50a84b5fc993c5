"""Coded concepts the node writes, and how the node names its algorithm in DICOM.

Every code here was checked against pydicom's copy of the DICOM code dictionaries
(`pydicom.sr.codedict.codes`) and against pixelmed's DicomSRValidator:

- Finding: (72704001, SCT, "Fracture"), a qualitative evaluation in TID 1501.
- Its value comes from CID 240 "Present/Absent": (52101004, SCT, "Present"),
  (272519000, SCT, "Absent") and (373068000, SCT, "Undetermined"). DICOM replaced the
  retired SNOMED concept 2667000 for "Absent" with 272519000. The doubt outcome (probability
  between the two operating thresholds) is written as "Undetermined": it is the one value
  CID 240 itself provides for "neither present nor absent", so no private or borrowed code is
  needed (82334004 "Indeterminate" belongs to CID 4220, visual fixation quality).
- Measurement: (122157, DCM, "Probability") in units (1, UCUM, "no units").
- Procedure reported: (363679005, SCT, "Imaging procedure") from CID 100; a code outside
  CID 100 is an error for the validator.

Pure: no torch, no I/O. Outcomes are taken as strings so this module need not import the
classifier (`Outcome` is a `StrEnum`, its members compare equal to these strings).
"""

from __future__ import annotations

import highdicom as hd
from pydicom.sr.coding import Code

from dicomnode import MANUFACTURER, __version__
from dicomnode.model.card import ModelCard

FRACTURE = Code("72704001", "SCT", "Fracture")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("272519000", "SCT", "Absent")
UNDETERMINED = Code("373068000", "SCT", "Undetermined")
PROBABILITY = Code("122157", "DCM", "Probability")
NO_UNITS = Code("1", "UCUM", "no units")
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
#: Purpose of reference of the node in Contributing Equipment Sequence.
PROCESSING_EQUIPMENT = Code("109102", "DCM", "Processing Equipment")
#: Purpose of reference of the radiograph in the overlay's Source Image Sequence.
SOURCE_IMAGE_FOR_PROCESSING = Code("121322", "DCM", "Source image for image processing operation")

#: Outcome (classifier.Outcome value) → value of the Fracture evaluation (CID 240).
FINDING_FOR_OUTCOME: dict[str, Code] = {
    "positive": PRESENT,
    "doubt": UNDETERMINED,
    "negative": ABSENT,
}

#: What the node contributes, in Contributing Equipment's Contribution Description.
CONTRIBUTION_DESCRIPTION = "AI fracture triage; not a diagnosis"


def finding_for_outcome(outcome: str) -> Code:
    """The CID 240 value that states `outcome` ("positive", "doubt" or "negative")."""
    try:
        return FINDING_FOR_OUTCOME[str(outcome)]
    except KeyError:
        raise ValueError(f"unknown outcome {outcome!r}") from None


def algorithm_parameters(card: ModelCard) -> list[str]:
    """The operating thresholds, as TID 4019 Algorithm Parameters (human-readable text)."""
    return [
        f"negative below {card.threshold_low:g} (high-sensitivity threshold)",
        f"positive at or above {card.threshold_high:g} (high-specificity threshold)",
    ]


def software_versions(card: ModelCard) -> list[str]:
    """Software Versions of the node's equipment: the model version, then the node's."""
    return [card.version, f"{MANUFACTURER} {__version__}"]


def algorithm_equipment(card: ModelCard) -> hd.ContributingEquipment:
    """Contributing Equipment item naming the node and its model (IHE AI Results).

    The model name says UNTRAINED DEMO for the demo model (`ModelCard.display_name`).
    """
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=card.display_name,
        software_versions=software_versions(card),
        contribution_description=CONTRIBUTION_DESCRIPTION,
    )
