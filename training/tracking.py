"""Runs you can compare: the run folder, its records, the split cache and optional loggers.

A run folder (`runs/<UTC timestamp>-<name>/` by default) holds everything needed to compare or
reproduce a run: `config.json` (the resolved configuration), `run.json` (git commit, the data
set's content hash, the split's hash, initial weights, versions, epochs run, best epoch and its
validation metrics), `split.json`, `metrics.jsonl` + `history.csv` and `curves.png` (per-epoch
loss and AUC), and the best epoch's validation plots (`roc.png`, `pr.png`, `reliability.png`,
`thresholds.png`) with their numbers in `validation.json`.

The split is kept with the run, never in the data folder (which may be read-only), and cached
next to the runs (`runs/splits/`) under the data set's content hash, so every later run on the
same data reuses it and is tested on the same images.

TensorBoard (`--tensorboard DIR`) and MLflow (`--mlflow DIR`, only if installed) are optional,
off by default, and write to local directories only.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoint import BEST, METRICS_LOG, load_checkpoint, read_metrics, save_checkpoint
from training.config import ConfigError, TrainConfig
from training.data import CLASS_NAMES, LabelledImages, Split, load_or_make_split
from training.epochs import EarlyStopping
from training.metrics import (
    average_precision,
    bootstrap_auc_ci,
    brier_score,
    expected_calibration_error,
    pr_curve,
    reliability_bins,
    roc_auc,
    roc_curve,
)
from training.plots import (
    curves_plot,
    pr_plot,
    reliability_plot,
    roc_plot,
    save_png,
    threshold_plot,
)

RUN_FILE, VALIDATION_FILE, HISTORY_CSV = "run.json", "validation.json", "history.csv"
SPLIT_FILE, CONFIG_FILE, CURVES_PNG = "split.json", "config.json", "curves.png"
VALIDATION_PLOTS = {
    "roc": "roc.png",
    "pr": "pr.png",
    "reliability": "reliability.png",
    "thresholds": "thresholds.png",
}
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auc", "lr", "best_auc", "seconds")
REPO = Path(__file__).resolve().parents[1]


def new_run_folder(runs_dir: Path, name: str, *, now: dt.datetime | None = None) -> Path:
    """`runs_dir/<YYYYmmdd-HHMMSS>-<name>`, made unique with a suffix if it already exists."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"
    path = runs_dir / f"{stamp}-{safe}"
    n = 1
    while path.exists():
        n += 1
        path = runs_dir / f"{stamp}-{safe}-{n}"
    return path


def git_commit(repo: Path = REPO) -> dict[str, Any]:
    """The source's commit and whether the tree had changes; "unknown" outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit or "unknown", "dirty": dirty}


def dataset_hash(images: LabelledImages) -> str:
    """SHA-256 of what the split is made of: every image's path, label, group and byte size.

    File sizes, not pixel bytes: hashing a 100,000-radiograph set would take longer than an
    epoch, and a changed label, image list or patient grouping (what changes a split) shows.
    """
    digest = hashlib.sha256()
    for sample in sorted(images.samples, key=lambda s: s.path):
        size = (images.root / sample.path).stat().st_size
        digest.update(f"{sample.path}\t{sample.label}\t{sample.group}\t{size}\n".encode())
    return digest.hexdigest()


def split_cache_path(cache_dir: Path, *, data_sha256: str, config: TrainConfig) -> Path:
    """The cached split of this data content for these split settings.

    The seed is not in the key: runs with other seeds on the same data are tested on the same
    images (the split's own seed is recorded in it).
    """
    dc = config.data
    settings = f"{dc.val_fraction!r}/{dc.test_fraction!r}/{dc.group_by}"
    tag = hashlib.sha256(settings.encode()).hexdigest()[:8]
    return cache_dir / f"{data_sha256[:16]}-{tag}.json"


def cached_split(
    images: LabelledImages, *, cache_dir: Path, data_sha256: str, config: TrainConfig
) -> tuple[Split, Path, list[str]]:
    """Reuse the cached split for this data content, or make and cache one."""
    path = split_cache_path(cache_dir, data_sha256=data_sha256, config=config)
    split, notes = split_at(images, path, config=config)
    return split, path, notes


def split_at(images: LabelledImages, path: Path, *, config: TrainConfig) -> tuple[Split, list[str]]:
    """The split kept in `path` (made there with the config's fractions and seed if absent)."""
    dc = config.data
    return load_or_make_split(
        images,
        path,
        val_fraction=dc.val_fraction,
        test_fraction=dc.test_fraction,
        seed=config.seed,
        group_by=dc.group_by,
    )


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", "utf-8")
    tmp.replace(path)


def write_history(
    out: Path, history: Sequence[Mapping[str, Any]], *, best_epoch: int, plot: bool
) -> None:
    """`history.csv` (every epoch, cheap) and, with `plot`, `curves.png` (at the run's end: a
    matplotlib figure costs about as much as an epoch of a tiny test model)."""
    with (out / HISTORY_CSV).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)
    if plot and history:
        save_png(curves_plot(history, best_epoch=best_epoch), out / CURVES_PNG)


def validation_report(
    labels: np.ndarray, p: np.ndarray, *, out: Path, epoch: int, n_bootstrap: int = 1000
) -> dict[str, Any]:
    """The best epoch's validation metrics (`validation.json`) and plots, in the run folder.

    P(fracture) is the raw softmax here: temperature and operating points are fitted by
    `training.export`, whose package carries the calibrated figures.
    """
    auc = roc_auc(labels, p)
    ci = bootstrap_auc_ci(labels, p, n_resamples=n_bootstrap)
    ap = average_precision(labels, p)
    bins = reliability_bins(labels, p)
    ece = expected_calibration_error(labels, p)
    report = {
        "epoch": epoch,
        "images": int(labels.size),
        "fracture": int(labels.sum()),
        "auc": round(auc, 6),
        "auc_ci95": [round(ci[0], 6), round(ci[1], 6)],
        "bootstrap_resamples": n_bootstrap,
        "average_precision": round(ap, 6),
        "brier": round(brier_score(labels, p), 6),
        "ece": round(ece, 6),
        "plots": dict(VALIDATION_PLOTS),
    }
    fpr, tpr, thresholds = roc_curve(labels, p)
    save_png(roc_plot(fpr, tpr, auc=auc, ci=ci, markers=[]), out / VALIDATION_PLOTS["roc"])
    precision, recall, _ = pr_curve(labels, p)
    prevalence = float(labels.mean())
    save_png(
        pr_plot(precision, recall, average_precision=ap, prevalence=prevalence, markers=[]),
        out / VALIDATION_PLOTS["pr"],
    )
    save_png(reliability_plot(bins, ece=ece), out / VALIDATION_PLOTS["reliability"])
    save_png(
        threshold_plot(thresholds, tpr, 1 - fpr, operating_points={"default": 0.5}),
        out / VALIDATION_PLOTS["thresholds"],
    )
    write_json(out / VALIDATION_FILE, report)
    return report


def write_run_record(
    out: Path, fixed: dict[str, Any], *, state: EarlyStopping, status: str, **extra: Any
) -> dict[str, Any]:
    """`run.json`: what makes this run comparable and reproducible (no patient data)."""
    data = fixed["data"]
    record = {
        "name": out.name,
        "status": status,
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_commit(),
        "data": {
            "description": data["description"],
            "layout": data["layout"],
            "sha256": data["data_sha256"],
            "split_file": SPLIT_FILE,
            "split_sha256": data["split_sha256"],
            "split_seed": data["split_seed"],
            "group_by": data["group_by"],
            "counts": data["counts"],
        },
        "init": fixed["init"],
        "config_file": CONFIG_FILE,
        "versions": fixed["versions"],
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_auc": state.best_auc if state.best_epoch else None,
        "stopped_early": state.stop,
        **extra,
    }
    write_json(out / RUN_FILE, record)
    return record


def finish_run(
    out: Path, fixed: dict[str, Any], *, state: EarlyStopping, trackers: Trackers, complete: bool
) -> None:
    """Record the run's end: the epoch count in best.pt (a copy made at the best epoch, so it
    said the best epoch where the total belongs), the best epoch's validation report and plots,
    `run.json`, and the trackers' summary."""
    write_history(out, read_metrics(out / METRICS_LOG), best_epoch=state.best_epoch, plot=True)
    validation: dict[str, Any] = {}
    if (out / BEST).is_file():
        best = load_checkpoint(out / BEST)
        best["epochs_run"] = state.epoch
        best.pop("format", None)
        save_checkpoint(out / BEST, best)
        logits, labels = best["validation"]["logits"], best["validation"]["labels"]
        p = torch.softmax(logits.double(), dim=1)[:, CLASS_NAMES.index("fracture")].numpy()
        validation = validation_report(
            labels.numpy(), p, out=out, epoch=int(best["validation"]["epoch"])
        )
    record = write_run_record(
        out,
        fixed,
        state=state,
        status="finished" if complete else "paused (continue with --resume last.pt)",
        validation=validation,
    )
    trackers.finish(out=out, summary=record)


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        items: dict[str, Any] = {}
        for key, inner in value.items():
            items.update(_flat(f"{prefix}.{key}" if prefix else str(key), inner))
        return items
    return {prefix: value}


class Trackers:
    """TensorBoard and/or MLflow, as configured; nothing at all by default."""

    def __init__(self, config: TrainConfig, *, run_name: str, resumed: bool) -> None:
        self._tensorboard: Any = None
        self._mlflow: Any = None
        tracking = config.tracking
        if tracking.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError(
                    "--tensorboard needs the tensorboard package (the 'training' extra)"
                ) from exc
            self._tensorboard = SummaryWriter(log_dir=str(Path(tracking.tensorboard) / run_name))
            self._tensorboard.add_text("config", json.dumps(config.to_dict(), indent=1))
        if tracking.mlflow:
            try:
                import mlflow  # optional, never a dependency
            except ImportError as exc:
                raise ConfigError(
                    "--mlflow: mlflow is not installed (pip install mlflow); it is optional"
                ) from exc
            mlflow.set_tracking_uri(Path(tracking.mlflow).resolve().as_uri())
            mlflow.set_experiment("dicomnode-training")
            self._mlflow = mlflow
            mlflow.start_run(run_name=run_name)
            if not resumed:
                mlflow.log_params(_flat("", config.to_dict()))

    def epoch(self, record: Mapping[str, Any]) -> None:
        epoch = int(record["epoch"])
        scalars = {k: float(v) for k, v in record.items() if k in HISTORY_COLUMNS[1:]}
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(key, value, epoch)
            self._tensorboard.flush()
        if self._mlflow is not None:
            self._mlflow.log_metrics(scalars, step=epoch)

    def finish(self, *, out: Path, summary: Mapping[str, Any]) -> None:
        numbers = {k: float(v) for k, v in _flat("", summary).items() if _is_number(v)}
        if self._tensorboard is not None:
            self._tensorboard.add_text("run", json.dumps(summary, indent=1, default=str))
            self._tensorboard.close()
        if self._mlflow is not None:
            self._mlflow.log_metrics(numbers)
            for name in (RUN_FILE, VALIDATION_FILE, HISTORY_CSV, CURVES_PNG, SPLIT_FILE):
                if (out / name).is_file():
                    self._mlflow.log_artifact(str(out / name))
            self._mlflow.end_run()

    def close(self) -> None:
        """On an error: release what was opened, record nothing more."""
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._mlflow is not None:
            self._mlflow.end_run(status="FAILED")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
