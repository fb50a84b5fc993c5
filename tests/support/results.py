"""Shared by the SR and SC tests: a model card, the attributes copied from the source."""

from __future__ import annotations

from dicomnode.model.card import ModelCard

#: Patient and study attributes every result object must carry over from its source.
PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


def result_card(*, trained: bool = True) -> ModelCard:
    """A tiny-architecture card with the default thresholds (0.3 / 0.7)."""
    return ModelCard(
        name="dicomnode fracture triage",
        version="2.1.0" if trained else "demo-test_efficientnet-seed0",
        architecture="test_efficientnet",
        input_size=160,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        threshold_low=0.3,
        threshold_high=0.7,
        trained=trained,
    )
