"""Classify files without the network or the database: `dicomnode classify` and the HTTP
analysis use this, with the same preprocessing, model, thresholds and builders as the node."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset, dcmread

from dicomnode.imaging import preprocess
from dicomnode.imaging.dicom_errors import READ_ERRORS
from dicomnode.model.classifier import Classifier, Prediction, outcome_for
from dicomnode.objects.sc import build_sc
from dicomnode.objects.sources import SourceRejected, build_leaving_out, describe_failure
from dicomnode.objects.sr import build_sr
from dicomnode.work.pipeline import OutputUIDs, _instance_number, log_refusal


@dataclass
class FileResult:
    file: str
    state: str  # classified | skipped | failed
    reason: str | None = None
    prediction: Prediction | None = None
    sc_path: Path | None = None
    sr_path: Path | None = None
    dataset: Dataset | None = field(default=None, repr=False)

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
            "sc": str(self.sc_path) if self.sc_path else None,
            "sr": str(self.sr_path) if self.sr_path else None,
        }


def _name(uid: str, kind: str) -> str:
    return f"{kind}-{hashlib.sha256(uid.encode()).hexdigest()[:16]}.dcm"


def classify_files(
    paths: Iterable[Path], *, classifier: Classifier, uid_root: str, out_dir: Path | None
) -> list[FileResult]:
    """Classify each DICOM file; write one SC per image and one SR per study to `out_dir`."""
    uids = OutputUIDs(uid_root, classifier.card.version)
    results: list[FileResult] = []
    for path in paths:
        results.append(_classify_one(Path(path), classifier, uids, out_dir))
    if out_dir is not None:
        by_study: dict[str, list[FileResult]] = defaultdict(list)
        for r in results:
            if r.state == "classified" and r.dataset is not None:
                by_study[str(r.dataset.StudyInstanceUID)].append(r)
        for study_uid, members in by_study.items():

            def build(chosen: Sequence[FileResult], study_uid: str = study_uid) -> Dataset:
                return build_sr(
                    sources=[m.dataset for m in chosen if m.dataset is not None],
                    predictions=[m.prediction for m in chosen if m.prediction is not None],
                    card=classifier.card,
                    sop_instance_uid=uids.sr_instance(study_uid, 1),
                    series_instance_uid=uids.sr_series(study_uid),
                    instance_number=1,
                    uid_root=uid_root,
                )

            sr, left_out = build_leaving_out(members, build, on_refused=log_refusal)
            for index, reason in left_out.items():
                # As the node does: classified, but the study report cannot hold it.
                members[index].state = "failed"
                members[index].reason = f"left out of the study report: {reason}"
            if sr is None:
                continue
            sr_path = out_dir / _name(str(sr.SOPInstanceUID), "sr")
            sr.save_as(sr_path, enforce_file_format=True)
            for index, m in enumerate(members):
                if index not in left_out:
                    m.sr_path = sr_path
    return results


def _classify_one(
    path: Path, classifier: Classifier, uids: OutputUIDs, out_dir: Path | None
) -> FileResult:
    try:
        ds = dcmread(path)
    except READ_ERRORS as exc:
        return FileResult(str(path), "failed", f"not a readable DICOM file ({type(exc).__name__})")
    reason = preprocess.eligibility(ds, uid_root=uids.root, min_size=classifier.card.min_image_size)
    if reason is not None:
        return FileResult(str(path), "skipped", reason)
    try:
        image = preprocess.to_grayscale(ds)
    except preprocess.NotClassifiable as exc:
        return FileResult(str(path), "failed", exc.reason)
    prediction = classifier.predict(image)
    result = FileResult(str(path), "classified", prediction=prediction, dataset=ds)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        try:
            sc = build_sc(
                source=ds,
                image=image,
                prediction=prediction,
                card=classifier.card,
                sop_instance_uid=uids.sc_instance(str(ds.SOPInstanceUID)),
                series_instance_uid=uids.sc_series(str(ds.StudyInstanceUID)),
                instance_number=_instance_number(ds),
            )
        except Exception as exc:  # the builder refused this source: explained, as the node does
            if not isinstance(exc, SourceRejected):
                log_refusal(exc)
            reason = f"the overlay cannot be built: {describe_failure(exc)}"
            return FileResult(str(path), "failed", reason, prediction=prediction)
        result.sc_path = out_dir / _name(str(sc.SOPInstanceUID), "sc")
        sc.save_as(result.sc_path, enforce_file_format=True)
    return result


def json_lines(results: list[FileResult], classifier: Classifier) -> list[str]:
    return [json.dumps(r.to_json(classifier)) for r in results]


__all__ = ["FileResult", "classify_files", "json_lines", "outcome_for"]
