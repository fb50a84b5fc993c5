"""The study report: a Comprehensive 3D SR with a TID 1500 Measurement Report (IHE AI Results).

Content tree (highdicom builds and checks every template):

    Imaging Measurement Report (TID 1500)
      Language, Observer Type = Device (TID 1004: the node, naming the model),
      Procedure reported = (363679005, SCT, "Imaging procedure")      [CID 100]
      Imaging Measurements
        Measurement Group "Fracture triage study result" (TID 1501): highest probability
            of the study and its outcome; source images = every classified image
        Measurement Group "Fracture triage image N" (TID 1501), one per image:
            Tracking Identifier + UID, Algorithm Identification (TID 4019: name, version,
            thresholds as parameters), Probability (122157, DCM) in (1, UCUM),
            Fracture (72704001, SCT) = Present / Absent / Undetermined [CID 240],
            Source of Measurement = the image
        Measurement Group "Fracture triage image N region K" (TID 1410), one per suspected
            region of a positive or doubt image (`imaging.regions`): Tracking Identifier + UID,
            Finding Type = Fracture, Algorithm Identification, Image Region = a closed
            SCOORD POLYLINE on the source image in its pixel coordinates (TID 1411 style)

The doubt outcome is written as "Undetermined" (see `dicomnode.objects.codes`). Patient and study
modules and Specific Character Set come from the first source, normalised by
`dicomnode.objects.sources.output_header` (an odd source never reaches highdicom as it is); the
document is COMPLETE, UNVERIFIED and FINAL (a later version is a new document naming this one
in Predecessor Documents Sequence). Content date/time is the time of building; every UID is
derived, so a repeated build yields the same identifiers. Pure: takes values, returns a Dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from dicomnode import MANUFACTURER
from dicomnode.model.card import UNTRAINED_LABEL, ModelCard
from dicomnode.objects.codes import (
    FRACTURE,
    IMAGING_PROCEDURE,
    NO_UNITS,
    PROBABILITY,
    algorithm_equipment,
    algorithm_parameters,
    finding_for_outcome,
    software_versions,
)
from dicomnode.objects.series import SR_SERIES_DESCRIPTION, SR_SERIES_NUMBER
from dicomnode.objects.sources import blanked, output_header
from dicomnode.uids import DEFAULT_UID_ROOT, derive_uid

if TYPE_CHECKING:
    from dicomnode.model.classifier import Prediction

#: Device Observer Name of the node in the observer context.
DEVICE_OBSERVER_NAME = "dicomnode fracture triage node"
STUDY_TRACKING_IDENTIFIER = "Fracture triage study result"
#: Probabilities are written with this many decimals (DS holds at most 16 characters).
PROBABILITY_DECIMALS = 4

#: highdicom checks these names and quotes them in a warning when they look odd (e.g. one
#: component): kept out of its constructor so no patient data reaches logs, set afterwards.
_PERSON_NAMES = ("PatientName", "ReferringPhysicianName")


def build_sr(
    *,
    sources: Sequence[Dataset],
    predictions: Sequence[Prediction],
    card: ModelCard,
    sop_instance_uid: str,
    series_instance_uid: str,
    instance_number: int = 1,
    previous_versions: Sequence[Dataset] = (),
    uid_root: str = DEFAULT_UID_ROOT,
) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report for one study's classified images.

    `sources` are the images' headers (pixel data may be absent), `predictions` their results
    in the same order. `previous_versions` are the headers of earlier versions of this report
    (Predecessor Documents Sequence). `uid_root` roots the derived Device Observer UID and
    Tracking Unique Identifiers (stable across report versions for the same image and model).
    """
    if not sources:
        raise ValueError("a report needs at least one classified image")
    if len(sources) != len(predictions):
        raise ValueError("sources and predictions differ in length")
    for prediction in predictions:
        if not 0.0 <= prediction.probability <= 1.0:
            raise ValueError("probability outside [0, 1]")
    normalised = [output_header(ds) for ds in sources]
    study_uids = {str(ds.StudyInstanceUID) for ds in normalised}
    if len(study_uids) != 1:
        raise ValueError("all sources of a report must belong to one study")
    headers = [blanked(ds, _PERSON_NAMES) for ds in normalised]
    study_uid = study_uids.pop()

    algorithm = hd.sr.AlgorithmIdentification(
        name=card.display_name,
        version=card.version,
        parameters=algorithm_parameters(card),
    )
    top = max(range(len(predictions)), key=lambda i: predictions[i].probability)
    groups: list[
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    ] = [
        _group(
            identifier=STUDY_TRACKING_IDENTIFIER,
            tracking_uid=derive_uid(uid_root, "sr-tracking-study", study_uid, card.version),
            algorithm=algorithm,
            prediction=predictions[top],
            images=headers,
        )
    ]
    for index, (header, prediction) in enumerate(zip(headers, predictions, strict=True)):
        groups.append(
            _group(
                identifier=f"Fracture triage image {_image_label(header, index)}",
                tracking_uid=derive_uid(
                    uid_root, "sr-tracking-image", str(header.SOPInstanceUID), card.version
                ),
                algorithm=algorithm,
                prediction=prediction,
                images=[header],
            )
        )
        groups += _region_groups(header=header, prediction=prediction, index=index,
                                 algorithm=algorithm, card=card, uid_root=uid_root)  # fmt: skip

    observer = hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid(uid_root, "device-observer", MANUFACTURER),
            name=DEVICE_OBSERVER_NAME,
            manufacturer_name=MANUFACTURER,
            model_name=card.display_name,
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=IMAGING_PROCEDURE,
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=headers,
        content=report[0],
        series_instance_uid=series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        series_description=SR_SERIES_DESCRIPTION,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=card.display_name,
        is_complete=True,
        is_final=True,
        is_verified=False,
        previous_versions=list(previous_versions) or None,
        contributing_equipment=[algorithm_equipment(card)],
    )
    sr.add_new("SoftwareVersions", "LO", software_versions(card))
    for keyword in _PERSON_NAMES:
        setattr(sr, keyword, normalised[0].get(keyword))
    return sr


def _group(
    *,
    identifier: str,
    tracking_uid: str,
    algorithm: hd.sr.AlgorithmIdentification,
    prediction: Prediction,
    images: Sequence[Dataset],
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One TID 1501 group: probability and fracture evaluation for `images`."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=identifier),
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=PROBABILITY,
                value=round(float(prediction.probability), PROBABILITY_DECIMALS),
                unit=NO_UNITS,
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=FRACTURE, value=finding_for_outcome(prediction.outcome)
            )
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds) for ds in images],
    )


def _region_groups(
    *,
    header: Dataset,
    prediction: Prediction,
    index: int,
    algorithm: hd.sr.AlgorithmIdentification,
    card: ModelCard,
    uid_root: str,
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """Two TID 1410 groups per suspected region of the image: its outline and its bounding
    box, each a closed SCOORD POLYLINE on the source image in its pixel coordinates, with the
    finding type Fracture. None for a negative image. Tracking UIDs are derived (image, model
    version, region number, shape).

    Why both shapes: the outline is what the GSPS draws; the box is what consumers that only
    handle rectangles use. (pixelmed's DicomSRValidator also misreads a document holding a
    single TID 1410 group, applying that template to the TID 1501 groups: with two per region
    there is never a single one.)"""
    if str(prediction.outcome) == "negative":
        return []
    rows, columns = int(header.Rows), int(header.Columns)
    label = _image_label(header, index)
    demo = "" if card.trained else f" ({UNTRAINED_LABEL})"
    source = hd.sr.SourceImageForRegion.from_source_image(header)
    groups = []
    for number, region in enumerate(prediction.regions, start=1):
        shapes = (
            ("", "outline", region.in_pixels(rows=rows, columns=columns)),
            (" bounding box", "box", region.box_in_pixels(rows=rows, columns=columns)),
        )
        for suffix, shape, points in shapes:
            uid = derive_uid(uid_root, "sr-tracking-region", str(header.SOPInstanceUID),
                             card.version, str(number), shape)  # fmt: skip
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=hd.sr.TrackingIdentifier(
                        uid=uid,
                        identifier=f"Fracture triage image {label} region {number}{suffix}{demo}",
                    ),
                    referenced_region=hd.sr.ImageRegion(
                        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                        graphic_data=points,
                        source_image=source,
                    ),
                    finding_type=FRACTURE,
                    algorithm_id=algorithm,
                )
            )
    return groups


def _image_label(ds: Dataset, index: int) -> str:
    """A human-readable, PHI-free label: series and instance number, else the position."""
    series, number = ds.get("SeriesNumber"), ds.get("InstanceNumber")
    if series not in (None, "") and number not in (None, ""):
        return f"{index + 1} (series {series}, instance {number})"
    return str(index + 1)
