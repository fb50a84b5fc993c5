"""Evaluate a model package on labelled images, the way the node would classify them.

    python -m training.evaluate --package PKG --data DIR [--split test] --out DIR

Probabilities come from `dicomnode.model.classifier.Classifier.from_package(PKG).predict_batch` on
`dicomnode.imaging.preprocess.load_image` output: the node's own code path (same preprocessing,
temperature and thresholds), so `dicomnode classify` reproduces them. The split is read from
the split file training keeps in its run folder (`--split-file RUN/split.json`); `--split all`
evaluates every image in DIR (an external test set needs no split file).

Written to OUT: `report.json` (AUC with a 95 % bootstrap CI, average precision, sensitivity,
specificity, PPV, NPV and the confusion matrix at both operating points, the three-outcome
table, ECE and Brier score with the reliability bins), `predictions.csv` (one row per image),
and `roc.png`, `pr.png`, `reliability.png`.

Where the data has fracture boxes (FracAtlas's COCO file, found automatically, or `--boxes
FILE`), the report's `localisation` says how often the heatmap's peak falls inside an
annotated fracture, with its 95 % interval (see `training.localisation`).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dicomnode.model.card import ModelCard, ModelPackageError, read_package, write_card
from dicomnode.model.classifier import Classifier
from training.data import (
    DataError,
    Sample,
    load_grayscale,
    load_split,
    read_dataset,
    select,
)
from training.localisation import find_coco_file, pointing_game, read_coco_boxes
from training.metrics import (
    average_precision,
    bootstrap_auc_ci,
    brier_score,
    confusion,
    expected_calibration_error,
    pr_curve,
    reliability_bins,
    roc_auc,
    roc_curve,
)
from training.plots import Marker, pr_plot, reliability_plot, roc_plot, save_png

REPORT_FILE, PREDICTIONS_FILE = "report.json", "predictions.csv"
PLOT_FILES = {"roc": "roc.png", "pr": "pr.png", "reliability": "reliability.png"}
_RED, _PURPLE = (214, 39, 40), (148, 103, 189)


def _number(value: float) -> float | None:
    """JSON-safe: NaN (an undefined ratio) becomes null."""
    return None if math.isnan(value) else round(float(value), 6)


def operating_point(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    c = confusion(y, p, threshold)
    return {
        "threshold": threshold,
        "sensitivity": _number(c.sensitivity),
        "specificity": _number(c.specificity),
        "ppv": _number(c.ppv),
        "npv": _number(c.npv),
        "confusion": c.to_json(),
    }


def compute_report(
    y: np.ndarray,
    p: np.ndarray,
    outcomes: Sequence[str],
    *,
    card: ModelCard,
    n_bootstrap: int = 2000,
    n_bins: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """All metrics of one evaluation as a JSON-ready dict (plots are drawn from it)."""
    auc = roc_auc(y, p)
    ci = bootstrap_auc_ci(y, p, n_resamples=n_bootstrap, seed=seed)
    bins = reliability_bins(y, p, n_bins=n_bins)
    table = {
        name: {
            o: int(sum(1 for t, out in zip(y, outcomes, strict=True) if t == label and out == o))
            for o in ("positive", "doubt", "negative")
        }
        for name, label in (("fracture", 1), ("normal", 0))
    }
    return {
        "images": int(y.size),
        "fracture": int(y.sum()),
        "normal": int(y.size - y.sum()),
        "auc": round(auc, 6),
        "auc_ci95": [round(ci[0], 6), round(ci[1], 6)],
        "bootstrap_resamples": n_bootstrap,
        "average_precision": round(average_precision(y, p), 6),
        "thresholds": {
            "low": operating_point(y, p, card.threshold_low),
            "high": operating_point(y, p, card.threshold_high),
        },
        "outcomes": table,
        "calibration": {
            "temperature": card.temperature,
            "ece": round(expected_calibration_error(y, p, n_bins=n_bins), 6),
            "brier": round(brier_score(y, p), 6),
            "bins": [
                {k: v if isinstance(v, int) else _number(v) for k, v in vars(b).items()}
                for b in bins
            ],
        },
    }


def draw_plots(y: np.ndarray, p: np.ndarray, report: dict[str, Any], out: Path) -> dict[str, str]:
    """ROC, PR and reliability PNGs in `out`; returns their file names."""
    low, high = report["thresholds"]["low"], report["thresholds"]["high"]

    def roc_marker(point: dict[str, Any], name: str, color: tuple[int, int, int]) -> Marker:
        spec, sens = point["specificity"] or 0.0, point["sensitivity"] or 0.0
        return Marker(1 - spec, sens, f"{name} {point['threshold']:.3f}", color)

    markers = [roc_marker(low, "low threshold", _RED), roc_marker(high, "high threshold", _PURPLE)]
    fpr, tpr, _ = roc_curve(y, p)
    save_png(
        roc_plot(fpr, tpr, auc=report["auc"], ci=tuple(report["auc_ci95"]), markers=markers),
        out / PLOT_FILES["roc"],
    )
    precision, recall, _ = pr_curve(y, p)
    pr_markers = [
        Marker(pt["sensitivity"] or 0.0, pt["ppv"] or 0.0, f"{name} {pt['threshold']:.3f}", color)
        for pt, name, color in ((low, "low threshold", _RED), (high, "high threshold", _PURPLE))
    ]
    save_png(
        pr_plot(
            precision,
            recall,
            average_precision=report["average_precision"],
            prevalence=report["fracture"] / report["images"],
            markers=pr_markers,
        ),
        out / PLOT_FILES["pr"],
    )
    bins = reliability_bins(y, p, n_bins=len(report["calibration"]["bins"]))
    save_png(
        reliability_plot(bins, ece=report["calibration"]["ece"]), out / PLOT_FILES["reliability"]
    )
    return dict(PLOT_FILES)


def classify(
    classifier: Classifier, root: Path, samples: Sequence[Sample], *, batch_size: int = 8
) -> tuple[np.ndarray, list[str]]:
    """P(fracture) and outcome per sample, by the node's classifier."""
    probabilities: list[float] = []
    outcomes: list[str] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        predictions = classifier.predict_batch([load_grayscale(root / s.path) for s in chunk])
        probabilities.extend(pred.probability for pred in predictions)
        outcomes.extend(str(pred.outcome) for pred in predictions)
    return np.asarray(probabilities, dtype=np.float64), outcomes


def evaluate(
    *,
    package: Path,
    data: Path,
    out: Path,
    split: str = "test",
    split_file: Path | None = None,
    positive_class: str = "",
    device: str = "auto",
    batch_size: int = 8,
    n_bootstrap: int = 2000,
    n_bins: int = 10,
    update_card: bool = False,
    boxes: Path | None = None,
    pointing_tolerance: float = 0.0,
) -> dict[str, Any]:
    """Classify the split with the package, write the report, CSV and plots; return the report."""
    classifier = Classifier.from_package(package, device=device)
    card = classifier.card
    images = read_dataset(data, positive_class=positive_class)
    if split == "all":
        samples = list(images.samples)
        split_note = "all images in the folder"
    else:
        split_path = split_file or data / "split.json"  # an older version's, read only
        if not split_path.exists():
            raise DataError(
                f"no split file {split_path}: pass --split-file RUN/split.json (training keeps "
                "the split in its run folder, never in the data folder)"
            )
        parsed, raw = load_split(split_path)
        samples = select(images, parsed, split)
        split_note = str(raw.get("note", ""))
    if not samples:
        raise DataError(f"the '{split}' split is empty")
    y = np.array([s.label for s in samples], dtype=np.int64)
    if y.min() == y.max():
        raise DataError(f"the '{split}' split needs both classes for an evaluation")
    p, outcomes = classify(classifier, images.root, samples, batch_size=batch_size)
    out.mkdir(parents=True, exist_ok=True)
    with (out / PREDICTIONS_FILE).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "probability", "outcome"])
        for sample, prob, outcome in zip(samples, p, outcomes, strict=True):
            writer.writerow([sample.path, sample.label, repr(float(prob)), outcome])
    metrics = compute_report(y, p, outcomes, card=card, n_bootstrap=n_bootstrap, n_bins=n_bins)
    report: dict[str, Any] = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {
            "name": card.display_name,
            "version": card.version,
            "architecture": card.architecture,
            "trained": card.trained,
            "weights_sha256": card.weights_sha256,
        },
        "data": {"description": images.describe(), "split": split, "split_note": split_note},
        **metrics,
    }
    boxes_file = boxes or find_coco_file(images.root)
    if boxes_file is not None:
        report["localisation"] = pointing_game(
            classifier,
            images.root,
            samples,
            read_coco_boxes(boxes_file),
            source=boxes_file.name,
            tolerance=pointing_tolerance,
            batch_size=batch_size,
        )
    report["plots"] = draw_plots(y, p, report, out)
    report["predictions"] = PREDICTIONS_FILE
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    if update_card:
        _add_to_card(package, split, report)
    return report


def _add_to_card(package: Path, split: str, report: dict[str, Any]) -> None:
    """Record the headline numbers of this evaluation in the package's model.json."""
    card, _ = read_package(package)
    summary = {
        "data": report["data"]["description"],
        "images": report["images"],
        "fracture": report["fracture"],  # the positives (dicomnode.model.evidence)
        "auc": report["auc"],
        "auc_ci95": report["auc_ci95"],
        "ece": report["calibration"]["ece"],
        **{
            f"{key}_at_{name}": report["thresholds"][name][key]
            for name in ("low", "high")
            for key in ("sensitivity", "specificity")
        },
    }
    if report.get("localisation"):
        summary["pointing_game"] = {
            k: report["localisation"][k]
            for k in ("images", "hit_rate", "hit_rate_ci95", "hit_rate_within_cell")
        }
    write_card(package, dataclasses.replace(card, metrics={**card.metrics, split: summary}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--package", required=True, type=Path, help="model package folder")
    parser.add_argument("--data", required=True, type=Path, help="data folder (either layout)")
    parser.add_argument("--out", required=True, type=Path, help="folder for report and plots")
    parser.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    parser.add_argument(
        "--split-file", type=Path,
        help="the run's RUN/split.json (DATA/split.json, left by an older version, if absent)",
    )  # fmt: skip
    parser.add_argument("--positive-class", default="", help="class folder meaning fracture")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--bins", type=int, default=10, help="calibration bins")
    parser.add_argument(
        "--boxes",
        type=Path,
        help="COCO file of fracture boxes for the pointing game (default: FracAtlas's "
        "Annotations/COCO JSON/COCO_fracture_masks.json in DATA, if present)",
    )
    parser.add_argument(
        "--pointing-tolerance",
        type=float,
        default=0.0,
        help="pixels around a box that still count as a hit (default 0)",
    )
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="add this evaluation's headline metrics to model.json",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(
            package=args.package,
            data=args.data,
            out=args.out,
            split=args.split,
            split_file=args.split_file,
            positive_class=args.positive_class,
            device=args.device,
            batch_size=args.batch_size,
            n_bootstrap=args.bootstrap,
            n_bins=args.bins,
            update_card=args.update_card,
            boxes=args.boxes,
            pointing_tolerance=args.pointing_tolerance,
        )
    except (DataError, ModelPackageError) as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    low, high = report["thresholds"]["low"], report["thresholds"]["high"]
    print(
        f"{report['data']['split']}: {report['images']} images, AUC {report['auc']:.4f} "
        f"(95% CI {report['auc_ci95'][0]:.4f}-{report['auc_ci95'][1]:.4f}); "
        f"low {low['threshold']:.3f}: sens {low['sensitivity']}, spec {low['specificity']}; "
        f"high {high['threshold']:.3f}: sens {high['sensitivity']}, spec {high['specificity']}; "
        f"ECE {report['calibration']['ece']:.4f}; report {args.out / REPORT_FILE}"
    )
    where = report.get("localisation")
    if where and where["images"]:
        print(
            f"heatmap peak inside the fracture box on {where['hits']} of {where['images']} "
            f"fractured images: {where['hit_rate']:.3f} (95% CI {where['hit_rate_ci95'][0]:.3f}-"
            f"{where['hit_rate_ci95'][1]:.3f})"
        )
        if where["hit_rate_within_cell"] is not None:
            low, high = where["hit_rate_within_cell_ci95"]
            print(
                f"peak's CAM cell ({where['cam_cells']}x{where['cam_cells']} grid) on the box: "
                f"{where['hits_within_cell']} of {where['images']}, "
                f"{where['hit_rate_within_cell']:.3f} (95% CI {low:.3f}-{high:.3f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
