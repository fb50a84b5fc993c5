"""Classify files without the network or the database: `dicomnode classify` and the HTTP
analysis use this, with the same preprocessing, model, thresholds and builders as the node:
`work.prepare.display_image` decides what is classified, `objects.outputs` makes the objects
(one per classified image and one per study, with the node's UIDs). Each file first goes
through admission's checks (`ingest.admission.check_file`: `node.max_dataset_mb`, once inflated
too, sequence depth, UIDs), so what the node would refuse by C-STORE is refused here alike."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread

from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.ingest.admission import StoreStatus, check_file
from dicomnode.model.classifier import Classifier, Prediction, outcome_for
from dicomnode.objects.outputs import (
    OUTPUTS,
    ClassifiedImage,
    OutputRefused,
    OutputUIDs,
    StudyImages,
    image_outputs,
    study_outputs,
)
from dicomnode.objects.sources import SourceRejected
from dicomnode.work.pipeline import log_refusal
from dicomnode.work.prepare import NotClassified, display_image


@dataclass
class FileResult:
    file: str
    state: str  # classified | skipped | failed
    reason: str | None = None
    prediction: Prediction | None = None
    #: The objects written for this file, by kind (`objects.outputs`): "sc", "sr".
    outputs: dict[str, Path] = field(default_factory=dict)
    dataset: Dataset | None = field(default=None, repr=False)
    #: The status of admission's refusal (`ingest.admission.check_file`), when it refused the file.
    refused: StoreStatus | None = None

    def to_json(self, classifier: Classifier) -> dict[str, Any]:
        card = classifier.card
        p = self.prediction
        return {
            "file": self.file,
            "state": self.state,
            "reason": self.reason,
            "outcome": str(p.outcome) if p else None,
            "probability": p.probability if p else None,
            "thresholds": {"low": card.threshold_low, "high": card.threshold_high},
            "model": card.display_name,
            "model_version": card.version,
            "untrained_demo": not card.trained,
            **{o.kind: str(self.outputs[o.kind]) if o.kind in self.outputs else None
               for o in OUTPUTS},
        }  # fmt: skip


def _name(uid: str, kind: str) -> str:
    return f"{kind}-{hashlib.sha256(uid.encode()).hexdigest()[:16]}.dcm"


def _save(ds: Dataset, kind: str, out_dir: Path) -> Path:
    path = out_dir / _name(str(ds.SOPInstanceUID), kind)
    ds.save_as(path, enforce_file_format=True)
    return path


def classify_files(
    paths: Iterable[Path], *, classifier: Classifier, uid_root: str, out_dir: Path | None,
    max_dataset_bytes: int, language: str = "en",
) -> list[FileResult]:  # fmt: skip
    """Classify each DICOM file; write its objects (one per image, one per study: see
    `objects.outputs`) to `out_dir`. `max_dataset_bytes`: the node's configured limit
    (`NodeSettings.max_dataset_bytes`), never a default of its own."""
    uids = OutputUIDs(root=uid_root, model_version=classifier.card.version)
    results: list[FileResult] = []
    for path in paths:
        results.append(_classify_one(Path(path), classifier, uids, out_dir, language,
                                     max_dataset_bytes=max_dataset_bytes))  # fmt: skip
    if out_dir is not None:
        by_study: dict[str, list[FileResult]] = defaultdict(list)
        for r in results:
            if r.state == "classified" and r.dataset is not None:
                by_study[str(r.dataset.StudyInstanceUID)].append(r)
        for study_uid, members in by_study.items():
            _report_study(study_uid, members, classifier=classifier, uids=uids, out_dir=out_dir)
    return results


def _report_study(
    study_uid: str,
    members: list[FileResult],
    *,
    classifier: Classifier,
    uids: OutputUIDs,
    out_dir: Path,
) -> None:
    study = StudyImages(
        study_instance_uid=study_uid,
        sources=[m.dataset for m in members if m.dataset is not None],
        predictions=[m.prediction for m in members if m.prediction is not None],
    )
    built, left_out = study_outputs(study, card=classifier.card, uids=uids,
                                    on_refused=log_refusal)  # fmt: skip
    for index, reason in left_out.items():
        # As the node does: classified, but the study report cannot hold it.
        members[index].state = "failed"
        members[index].reason = f"left out of the study report: {reason}"
    for output, ds in built:
        path = _save(ds, output.kind, out_dir)
        for index, m in enumerate(members):
            if index not in left_out:
                m.outputs[output.kind] = path


def _classify_one(
    path: Path, classifier: Classifier, uids: OutputUIDs, out_dir: Path | None, language: str,
    *, max_dataset_bytes: int,
) -> FileResult:  # fmt: skip
    try:
        checked = check_file(path.read_bytes(), max_dataset_bytes=max_dataset_bytes)
    except OSError as exc:
        return FileResult(str(path), "failed", f"not a readable DICOM file ({type(exc).__name__})")
    if checked.header is None:
        return FileResult(str(path), "failed", checked.reason, refused=checked.status)
    try:
        ds = dcmread(path)
    except READ_ERRORS as exc:
        return FileResult(str(path), "failed", f"not a readable DICOM file ({type(exc).__name__})")
    image = display_image(ds, uid_root=uids.root, min_image_size=classifier.card.min_image_size)
    if isinstance(image, NotClassified):
        return FileResult(str(path), str(image.state), image.reason)
    prediction = classifier.predict(image)
    result = FileResult(str(path), "classified", prediction=prediction, dataset=ds)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        classified = ClassifiedImage(
            source=ds,
            image=image,
            prediction=prediction,
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        )
        try:
            built = image_outputs(classified, card=classifier.card, uids=uids,
                                  language=language)  # fmt: skip
        except OutputRefused as exc:  # explained, as the node does
            if not isinstance(exc.cause, SourceRejected):
                log_refusal(exc.cause)
            return FileResult(str(path), "failed", exc.reason, prediction=prediction)
        for output, ds_out in built:
            result.outputs[output.kind] = _save(ds_out, output.kind, out_dir)
    return result


def json_lines(results: list[FileResult], classifier: Classifier) -> list[str]:
    return [json.dumps(r.to_json(classifier)) for r in results]


__all__ = ["FileResult", "classify_files", "json_lines", "outcome_for"]
