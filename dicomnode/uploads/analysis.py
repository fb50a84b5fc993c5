"""Analysis of uploaded files (HTTP): one image, or a ZIP of DICOM studies (a result each).

Nothing here re-implements the node: images are read by `preprocess.load_image`, DICOM goes
through `offline.classify_files` (the pipeline's `work.prepare.display_image`, the classifier,
and the registry `objects.outputs` for the objects of each image and of each study, UIDs
derived from the source UIDs and the model version — so a file analysed here gives the same
probability and the same SR/SC SOP Instance UIDs as when the node receives it by C-STORE), and
the overlay PNG is `sc.render_overlay` (or a rendering of the SC itself for DICOM). Result
fields are `uploads.fields`'.

Uploads meet the node's own limits, as configured: DICOM goes through admission's checks
(`ingest.admission.check_file`, the policy a C-STORE meets: `node.max_dataset_mb`, once
inflated too, sequence depth, UIDs) and a picture may not decode to more than
`node.max_dataset_mb`; a refusal answers 413 (a size) or 422 with code `file_refused` and the
admission's reason.

Each function writes into a directory the caller owns (see `uploads.py`) and returns a
JSON-ready dict without URLs; the web layer adds those. Errors the client caused raise
`AnalysisError` with an HTTP status and a message code (translated by the
`error.<code>` messages of the pages' catalogues, `dicomnode/locale`).

Fields of an image result:
- `outcome`: positive (P ≥ high threshold), doubt, negative (P < low threshold) — the node's
  three outcomes; `label`: "fracture" / "indeterminate" / "no_fracture", the same decision named.
- `fracture_probability` P and `normal_probability` 1 − P (two classes).
- `confidence` = max(P, 1 − P): the probability of the more likely class, 0.5 to 1. It says how
  far the model is from a coin toss, not how far from a threshold; the outcome uses the
  thresholds. For the UNTRAINED DEMO model it means nothing.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from PIL import Image
from pydicom import Dataset, dcmread

from dicomnode.imaging import preprocess
from dicomnode.imaging.files import ImageTooLarge
from dicomnode.ingest.admission import StoreStatus, check_file
from dicomnode.library_warnings import summarised
from dicomnode.model.card import ModelCard
from dicomnode.model.classifier import Classifier
from dicomnode.objects.outputs import IMAGE_OUTPUTS, SC, STUDY_OUTPUTS
from dicomnode.objects.sc import SC_MAX_SIZE, render_overlay
from dicomnode.uploads.fields import (
    dicom_summary,
    distinct,
    model_fields,
    prediction_fields,
    text_value,
)
from dicomnode.uploads.kinds import AnalysisError, UploadKind, as_part10, sniff
from dicomnode.uploads.offline import FileResult, classify_files
from dicomnode.uploads.studyzip import ArchiveRejected, ZipLimits, read_members
from dicomnode.uploads.xlsx import write_report

OVERLAY_FILE = "overlay.png"
REPORT_FILE = "report.xlsx"
#: Long side of the per-image overlay PNGs of a study (the single-image one is full size).
STUDY_OVERLAY_SIZE = 768


def _png(pixels: np.ndarray, max_size: int | None = None) -> bytes:
    """PNG of uint8 RGB pixels. Not `sc.render_png`: its `optimize=True` costs seconds on a
    1024² overlay, fine for cached thumbnails, not for an answer someone waits for."""
    picture = Image.fromarray(pixels, "RGB")
    if max_size is not None:
        picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=4)
    return buffer.getvalue()


def _sc_png(path: Path, max_size: int) -> bytes:
    """The overlay PNG of a DICOM upload: the Secondary Capture's own pixels."""
    return _png(dcmread(path).pixel_array, max_size)


# --- one file -----------------------------------------------------------------------------------


@summarised("uploaded file")
def analyze_file(
    data: bytes, *, kind: UploadKind, classifier: Classifier, uid_root: str, directory: Path,
    max_dataset_bytes: int, language: str = "en",
) -> dict[str, Any]:  # fmt: skip
    """Classify one uploaded image (any `UploadKind` but ZIP) into `directory` (`language`:
    of the text burned into the overlay; `max_dataset_bytes`: the node's configured limit)."""
    started = time.perf_counter()
    card = classifier.card
    if kind == UploadKind.DICOM:
        result = _analyze_dicom(data, classifier=classifier, uid_root=uid_root,
                                directory=directory, language=language,
                                max_dataset_bytes=max_dataset_bytes)  # fmt: skip
    else:
        (directory / f"upload.{kind}").write_bytes(data)
        try:
            image = preprocess.load_image(data, max_decoded_bytes=max_dataset_bytes)
        except ImageTooLarge as exc:
            raise AnalysisError(413, "file_refused", reason=exc.reason) from exc
        except preprocess.NotClassifiable as exc:
            raise AnalysisError(422, "image_unreadable", reason=exc.reason) from exc
        small = preprocess.too_small(rows=image.shape[0], columns=image.shape[1],
                                     min_size=card.min_image_size)  # fmt: skip
        if small:
            raise AnalysisError(422, "image_too_small", reason=small)
        prediction = classifier.predict(image)
        overlay = render_overlay(image, prediction.heatmap, outcome=str(prediction.outcome),
                                 probability=prediction.probability, card=card,
                                 language=language)  # fmt: skip
        (directory / OVERLAY_FILE).write_bytes(_png(overlay))
        result = {
            **prediction_fields(prediction.probability, card),
            "image": {"rows": int(image.shape[0]), "columns": int(image.shape[1])},
            "files": {"overlay": OVERLAY_FILE},
        }
    result["downloads"] = sorted(set(result["files"].values()))
    return {
        "type": "image",
        "kind": str(kind),
        **result,
        **model_fields(card),
        "processing_ms": round((time.perf_counter() - started) * 1000, 1),
    }


def _analyze_dicom(
    data: bytes, *, classifier: Classifier, uid_root: str, directory: Path, language: str,
    max_dataset_bytes: int,
) -> dict[str, Any]:  # fmt: skip
    source = directory / "upload.dcm"
    source.write_bytes(as_part10(data))
    [r] = classify_files([source], classifier=classifier, uid_root=uid_root, out_dir=directory,
                         language=language, max_dataset_bytes=max_dataset_bytes)  # fmt: skip
    if r.refused is not None:
        raise AnalysisError.refused(r.refused, r.reason or "")
    if r.state == "skipped":
        raise AnalysisError(422, "not_radiograph", reason=r.reason)
    if r.state != "classified" or r.prediction is None or r.dataset is None:
        raise AnalysisError(422, "dicom_unreadable", reason=r.reason or "unknown")
    (directory / OVERLAY_FILE).write_bytes(_sc_png(r.outputs[SC.kind], SC_MAX_SIZE))
    ds = r.dataset
    return {
        **prediction_fields(r.prediction.probability, classifier.card),
        "image": {"rows": int(ds.Rows), "columns": int(ds.Columns)},
        "dicom": {
            **dicom_summary(ds),
            **{f"{kind}_sop_instance_uid": _sop_uid(path) for kind, path in r.outputs.items()},
        },
        "files": {"overlay": OVERLAY_FILE, **{k: path.name for k, path in r.outputs.items()}},
    }


def _sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# --- a ZIP study --------------------------------------------------------------------------------


@dataclass
class _Entry:
    name: str
    path: Path
    header: Dataset | None = None
    reason: str | None = None
    #: Admission's refusal status, when it refused the entry.
    refused: StoreStatus | None = None


@summarised("uploaded study")
def analyze_study(
    archive: Path, *, classifier: Classifier, uid_root: str, directory: Path, limits: ZipLimits,
    max_dataset_bytes: int, language: str = "en",
) -> dict[str, Any]:  # fmt: skip
    """Classify the radiographs of a zipped study (DICOM at any depth) into `directory`.

    Every entry is reported: classified, skipped (with the reason: not DICOM, not a
    radiograph, …) or failed. Each study is a result of its own (an archive may hold several
    patients): its outcome from its own images, or, when none was classified, the reason.
    One SR per study, one SC and overlay PNG per classified image. A DICOM entry admission
    refuses (`max_dataset_bytes`, …) is left out with the reason; when every one was, the
    archive is refused with the first reason.
    The extracted copies live in a private temporary directory removed before returning.
    """
    started = time.perf_counter()
    card = classifier.card
    with TemporaryDirectory(dir=directory, prefix=".extract-") as tmp:
        try:
            members, left_out = read_members(archive, Path(tmp), limits)
        except ArchiveRejected as exc:
            raise AnalysisError(exc.status, exc.code, **exc.params) from exc
        entries = [_read_header(m.name, m.path, max_dataset_bytes=max_dataset_bytes)
                   for m in members]  # fmt: skip
        dicom = [e for e in entries if e.header is not None]
        refused = [e for e in entries if e.refused is not None]
        if not dicom and refused:
            raise AnalysisError.refused(refused[0].refused, refused[0].reason or "")  # type: ignore[arg-type]
        if not dicom:
            raise AnalysisError(422, "zip_no_dicom")
        by_study: dict[str, list[_Entry]] = defaultdict(list)
        for e in dicom:
            by_study[str(e.header.StudyInstanceUID)].append(e)  # type: ignore[union-attr]
        images: list[dict[str, Any]] = []
        studies: list[dict[str, Any]] = []
        files: list[str] = []
        for study_uid, members_of_study in by_study.items():
            results = classify_files([e.path for e in members_of_study], classifier=classifier,
                                     uid_root=uid_root, out_dir=directory, language=language,
                                     max_dataset_bytes=max_dataset_bytes)  # fmt: skip
            pairs = zip(members_of_study, results, strict=True)
            rows = [_image_row(e, r, card, directory, len(images) + i, files)
                    for i, (e, r) in enumerate(pairs)]  # fmt: skip
            images += rows
            studies.append(_study_row(study_uid, members_of_study, results, rows, card, files))
        for e in entries:
            if e.header is None:
                images.append({"entry": e.name, "state": "skipped", "reason": e.reason})
        images += [{"entry": s.name, "state": "skipped", "reason": s.reason} for s in left_out]
    result: dict[str, Any] = {
        "type": "study",
        "kind": str(UploadKind.ZIP),
        "studies": studies,
        "images": images,
        "counts": {
            "entries": len(members) + len(left_out),
            "dicom": len(dicom),
            "classified": sum(1 for i in images if i["state"] == "classified"),
            "skipped": sum(1 for i in images if i["state"] == "skipped"),
            "failed": sum(1 for i in images if i["state"] == "failed"),
        },
        **model_fields(card),
        "processing_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    result["report"] = {"sheets": write_report(directory / REPORT_FILE, result)}
    result["files"] = {"report": REPORT_FILE}
    result["downloads"] = sorted({*files, REPORT_FILE})
    return result


def _read_header(name: str, path: Path, *, max_dataset_bytes: int) -> _Entry:
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] != b"DICM":
        return _Entry(name, path, reason="not a DICOM file")
    checked = check_file(path.read_bytes(), max_dataset_bytes=max_dataset_bytes)
    header = checked.header
    if header is None:
        return _Entry(name, path, reason=checked.reason, refused=checked.status)
    return _Entry(name, path, header=header)


def _image_row(
    entry: _Entry, r: FileResult, card: ModelCard, directory: Path, n: int, files: list[str]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "entry": entry.name,
        "state": r.state,
        "reason": r.reason,
        "metadata": dicom_summary(r.dataset if r.dataset is not None else entry.header),  # type: ignore[arg-type]
    }
    if r.prediction is not None and SC.kind in r.outputs:
        overlay = f"overlay-{n:05d}.png"
        (directory / overlay).write_bytes(_sc_png(r.outputs[SC.kind], STUDY_OVERLAY_SIZE))
        row.update(prediction_fields(r.prediction.probability, card))
        row["files"] = {"overlay": overlay}
        for output in IMAGE_OUTPUTS:
            path = r.outputs.get(output.kind)
            if path is None:  # nothing of this kind for this image (a negative one's GSPS)
                continue
            row[f"{output.kind}_sop_instance_uid"] = _sop_uid(path)
            row["files"][output.kind] = path.name
        files += row["files"].values()
    return row


def _study_row(
    study_uid: str,
    entries: list[_Entry],
    results: list[FileResult],
    rows: list[dict[str, Any]],
    card: ModelCard,
    files: list[str],
) -> dict[str, Any]:
    classified = [r for r in results if r.prediction is not None]
    first = entries[0].header
    series: dict[str, dict[str, Any]] = {}
    for row in rows:
        meta = row["metadata"]
        item = series.setdefault(str(meta["series_instance_uid"]), {
            "series_instance_uid": meta["series_instance_uid"],
            "series_number": meta["series_number"], "modality": meta["modality"],
            "series_description": meta["series_description"], "images": 0,
        })  # fmt: skip
        item["images"] += 1
    study: dict[str, Any] = {
        "study_instance_uid": study_uid,
        "entries": [row["entry"] for row in rows],
        "images": len(entries),
        "classified": len(classified),
        "skipped": sum(1 for r in results if r.state == "skipped"),
        "failed": sum(1 for r in results if r.state == "failed"),
        "summary": {
            "study_date": text_value(first, "StudyDate"),
            "study_description": text_value(first, "StudyDescription"),
            "modalities": distinct(rows, "modality"),
            "manufacturers": distinct(rows, "manufacturer"),
            "models": distinct(rows, "manufacturer_model_name"),
            "body_parts": distinct(rows, "body_part_examined"),
            "views": distinct(rows, "view_position"),
            "series": list(series.values()),
        },
        "outcome": None,
        #: Why a study has no outcome: the reasons its images were not classified.
        "reason": "; ".join(sorted({r.reason for r in results if r.reason})) or None,
        "files": {},
    }
    if classified:
        study["reason"] = None
        top = max(r.prediction.probability for r in classified)  # type: ignore[union-attr]
        study.update(prediction_fields(top, card))
        for output in STUDY_OUTPUTS:
            path = classified[0].outputs.get(output.kind)
            if path is not None:
                files.append(path.name)
                study[f"{output.kind}_sop_instance_uid"] = _sop_uid(path)
                study["files"][output.kind] = path.name
    return study


#: `kinds` names re-exported: the routes and tests import them from here.
__all__ = ["AnalysisError", "UploadKind", "analyze_file", "analyze_study", "sniff"]
