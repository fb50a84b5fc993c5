"""Training checkpoints (`last.pt`, `best.pt`) and the per-epoch metrics log.

A checkpoint is a plain dict of tensors and JSON-like values, saved with `torch.save` and read
back with `weights_only=True` (no arbitrary pickles). It holds what a resume needs (model,
optimizer, scheduler, grad scaler, RNG, early-stopping state, configuration, the split's
digest) and what an export needs (model info, the validation logits and labels of its epoch,
the data description).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from training.config import ConfigError
from training.data import Split

CHECKPOINT_FORMAT = 1
LAST, BEST, METRICS_LOG = "last.pt", "best.pt", "metrics.jsonl"


def split_digest(split: Split) -> str:
    """SHA-256 of the split's lists: a resume must use the split the run started with."""
    text = json.dumps([split.train, split.val, split.test])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically, so an interrupted save never leaves a broken checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        raise ConfigError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a training checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def append_metrics(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def rewind_metrics(path: Path, epoch: int) -> None:
    """Drop log lines after `epoch`, so a resumed run appends where its checkpoint left off."""
    records = read_metrics(path)
    kept = [r for r in records if r["epoch"] <= epoch]
    if len(kept) != len(records):
        path.write_text("".join(json.dumps(r) + "\n" for r in kept), "utf-8")
