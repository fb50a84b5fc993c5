"""The output registry: every object the node makes from its classification, in one list.

Each entry names the object's `kind` (the name of its result rows, files and API fields),
what it is made of (one classified image, or the classified images of one study), its series
and its builder; its UIDs follow from the kind and the scope (`OutputUIDs`). The worker
pipeline (`work.pipeline`), `dicomnode classify` and the HTTP analysis (`uploads.offline`)
all make their objects with `image_outputs` and `study_outputs` below, so a file analysed
offline gives the same objects, with the same UIDs, as when the node receives it by C-STORE.

A new object (a SEG) is one builder module plus one entry in `IMAGE_OUTPUTS` or
`STUDY_OUTPUTS` (and its series in `objects.series`, its kind in `store.tables.ResultKind`).
Pure: values in, datasets out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
from pydicom import Dataset

from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.imaging.reasons import reason
from dicomnode.model.card import ModelCard
from dicomnode.objects.gsps import build_gsps
from dicomnode.objects.sc import build_sc
from dicomnode.objects.series import (
    GSPS_SERIES_DESCRIPTION,
    GSPS_SERIES_NUMBER,
    SC_SERIES_DESCRIPTION,
    SC_SERIES_NUMBER,
    SR_SERIES_DESCRIPTION,
    SR_SERIES_NUMBER,
)
from dicomnode.objects.sources import build_leaving_out, describe_failure
from dicomnode.objects.sr import build_sr
from dicomnode.uids import derive_uid

if TYPE_CHECKING:
    from dicomnode.model.classifier import Prediction


@dataclass(frozen=True)
class ClassifiedImage:
    """One classified radiograph, as image-scope builders take it."""

    source: Dataset
    #: The display image, `preprocess.to_grayscale(source)`; the heatmap has its aspect.
    image: np.ndarray
    prediction: Prediction
    sop_instance_uid: str
    study_instance_uid: str


@dataclass(frozen=True)
class StudyImages:
    """The classified images of one study, as study-scope builders take them."""

    study_instance_uid: str
    #: The images' headers (pixel data may be absent), and their results in the same order.
    sources: Sequence[Dataset]
    predictions: Sequence[Prediction]
    #: The object's version (a late image makes a new one) and the previous version's header.
    version: int = 1
    previous: Dataset | None = None


class ImageBuilder(Protocol):
    """Returns None when the image has nothing of this kind (a negative image's GSPS)."""

    def __call__(
        self, *, image: ClassifiedImage, card: ModelCard, sop_instance_uid: str,
        series_instance_uid: str, uid_root: str, language: str,
    ) -> Dataset | None: ...  # fmt: skip


class StudyBuilder(Protocol):
    def __call__(
        self, *, study: StudyImages, card: ModelCard, sop_instance_uid: str,
        series_instance_uid: str, uid_root: str,
    ) -> Dataset: ...  # fmt: skip


@dataclass(frozen=True)
class ImageOutput:
    """An object made for each classified image (UIDs keyed by the source SOP Instance UID)."""

    kind: str
    #: What it is, in a failure reason: "the overlay cannot be built: …".
    noun: str
    series_number: int
    series_description: str
    build: ImageBuilder


@dataclass(frozen=True)
class StudyOutput:
    """An object made once per study over its classified images, versioned (UIDs keyed by
    the Study Instance UID and the version)."""

    kind: str
    noun: str
    series_number: int
    series_description: str
    build: StudyBuilder


@dataclass(frozen=True)
class OutputUIDs:
    """Every UID the node writes is derived, so repeating a job repeats its objects exactly:
    (UID root, source key, model version, kind[, version])."""

    root: str
    model_version: str

    def series(self, output: ImageOutput | StudyOutput, study_uid: str) -> str:
        return derive_uid(self.root, study_uid, self.model_version, f"{output.kind}-series")

    def instance(self, output: ImageOutput | StudyOutput, key: str, version: int = 1) -> str:
        """`key`: the source's SOP Instance UID (image scope) or the Study Instance UID."""
        if isinstance(output, ImageOutput):
            return derive_uid(self.root, key, self.model_version, output.kind)
        return derive_uid(self.root, key, self.model_version, output.kind, str(version))


class OutputRefused(Exception):
    """A builder refused a source; `reason` names the object and why (no PHI, no UIDs)."""

    def __init__(self, output: ImageOutput | StudyOutput, cause: Exception) -> None:
        super().__init__(reason("not_built", output=output.noun, reason=describe_failure(cause)))
        self.output = output
        self.cause = cause
        self.reason = str(self)


def instance_number(ds: Dataset) -> int:
    """The source's Instance Number for its outputs; 1 when absent or not a usable number."""
    try:
        value = int(ds.get("InstanceNumber") or 1)
    except READ_ERRORS:  # absent, malformed, or an element pydicom cannot decode
        return 1
    return value if 0 < value < 2**31 else 1


# --- the entries ------------------------------------------------------------------------------


def _secondary_capture(
    *, image: ClassifiedImage, card: ModelCard, sop_instance_uid: str,
    series_instance_uid: str, uid_root: str, language: str,
) -> Dataset:  # fmt: skip
    return build_sc(source=image.source, image=image.image, prediction=image.prediction,
                    card=card, sop_instance_uid=sop_instance_uid,
                    series_instance_uid=series_instance_uid,
                    instance_number=instance_number(image.source),
                    language=language)  # fmt: skip


def _presentation_state(
    *, image: ClassifiedImage, card: ModelCard, sop_instance_uid: str,
    series_instance_uid: str, uid_root: str, language: str,
) -> Dataset | None:  # fmt: skip
    # The annotation's short text stays English ASCII whatever `language`: it must fit the
    # source image's character set, which the GSPS shares (objects/gsps.py).
    return build_gsps(source=image.source, prediction=image.prediction, card=card,
                      sop_instance_uid=sop_instance_uid, series_instance_uid=series_instance_uid,
                      instance_number=instance_number(image.source))  # fmt: skip


def _structured_report(
    *, study: StudyImages, card: ModelCard, sop_instance_uid: str,
    series_instance_uid: str, uid_root: str,
) -> Dataset:  # fmt: skip
    previous = [study.previous] if study.previous is not None else []
    return build_sr(sources=study.sources, predictions=study.predictions, card=card,
                    sop_instance_uid=sop_instance_uid, series_instance_uid=series_instance_uid,
                    instance_number=study.version, previous_versions=previous,
                    uid_root=uid_root)  # fmt: skip


SC = ImageOutput(kind="sc", noun="overlay", series_number=SC_SERIES_NUMBER,
                 series_description=SC_SERIES_DESCRIPTION, build=_secondary_capture)  # fmt: skip
GSPS = ImageOutput(kind="gsps", noun="presentation state", series_number=GSPS_SERIES_NUMBER,
                   series_description=GSPS_SERIES_DESCRIPTION,
                   build=_presentation_state)  # fmt: skip
SR = StudyOutput(kind="sr", noun="study report", series_number=SR_SERIES_NUMBER,
                 series_description=SR_SERIES_DESCRIPTION, build=_structured_report)  # fmt: skip

IMAGE_OUTPUTS: tuple[ImageOutput, ...] = (SC, GSPS)
STUDY_OUTPUTS: tuple[StudyOutput, ...] = (SR,)
OUTPUTS: tuple[ImageOutput | StudyOutput, ...] = (*IMAGE_OUTPUTS, *STUDY_OUTPUTS)


# --- making them ------------------------------------------------------------------------------


def image_outputs(
    image: ClassifiedImage, *, card: ModelCard, uids: OutputUIDs, language: str = "en"
) -> list[tuple[ImageOutput, Dataset]]:
    """Every image-scope object of one classified image (a kind with nothing to show, such as
    a negative image's GSPS, is absent); raises `OutputRefused` when a builder refuses the
    source (the image is classified, its objects cannot be made). `language`: of the text
    burned into them (`[outputs] language`)."""
    built = []
    for output in IMAGE_OUTPUTS:
        try:
            ds = output.build(
                image=image,
                card=card,
                sop_instance_uid=uids.instance(output, image.sop_instance_uid),
                series_instance_uid=uids.series(output, image.study_instance_uid),
                uid_root=uids.root,
                language=language,
            )
        except Exception as exc:  # the builder refused this source: explained, not a crash
            raise OutputRefused(output, exc) from exc
        if ds is not None:
            built.append((output, ds))
    return built


def study_outputs(
    study: StudyImages,
    *,
    card: ModelCard,
    uids: OutputUIDs,
    previous: Mapping[str, Dataset] | None = None,
    on_refused: Callable[[Exception], None] = lambda exc: None,
) -> tuple[list[tuple[StudyOutput, Dataset]], dict[int, str]]:
    """Every study-scope object over the images each can hold, and why each other image is
    left out (by index, `sources.build_leaving_out`; an image one object refuses is left out of
    the next ones too). When an object can hold no image, there are no objects and every
    image has its reason. `previous`: the last version of each object, by kind."""
    built: list[tuple[StudyOutput, Dataset]] = []
    left_out: dict[int, str] = {}
    for output in STUDY_OUTPUTS:
        kept = [i for i in range(len(study.sources)) if i not in left_out]

        def build(chosen: Sequence[int], output: StudyOutput = output) -> Dataset:
            members = StudyImages(
                study_instance_uid=study.study_instance_uid,
                sources=[study.sources[i] for i in chosen],
                predictions=[study.predictions[i] for i in chosen],
                version=study.version,
                previous=(previous or {}).get(output.kind),
            )
            return output.build(
                study=members,
                card=card,
                sop_instance_uid=uids.instance(output, study.study_instance_uid, study.version),
                series_instance_uid=uids.series(output, study.study_instance_uid),
                uid_root=uids.root,
            )

        ds, reasons = build_leaving_out(kept, build, on_refused=on_refused)
        left_out.update({kept[i]: reason for i, reason in reasons.items()})
        if ds is None:
            return [], left_out
        built.append((output, ds))
    return built, left_out
