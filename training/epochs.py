"""One epoch of training and validation, the loaders, early stopping and progress output.

Progress bars (tqdm) show on a terminal only; logs of batch jobs stay one line per epoch.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, Sampler, WeightedRandomSampler
from tqdm.auto import tqdm

from training.config import TrainConfig
from training.data import CLASS_NAMES, DataError, RadiographDataset, Sample
from training.model import Runtime

T = TypeVar("T")
Loader = DataLoader[tuple[torch.Tensor, int]]


def show_progress() -> bool:
    """Progress bars on a terminal only: logs of batch jobs stay one line per epoch."""
    return sys.stderr.isatty()


def log(message: str) -> None:
    if show_progress():
        tqdm.write(message, file=sys.stdout)  # above the bars, not through them
    else:
        print(message, flush=True)


def progress(items: Iterable[T], *, total: int, desc: str, leave: bool = False) -> tqdm[T]:
    """A tqdm bar on stderr, silent when stderr is not a terminal."""
    return tqdm(
        items,
        total=total,
        desc=desc,
        leave=leave,
        dynamic_ncols=True,
        disable=not show_progress(),
        unit="batch",
    )


def train_one_epoch(
    model: torch.nn.Module,
    loader: Loader,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    criterion: torch.nn.Module,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    desc: str,
) -> float:
    """One pass over the training data; returns the mean loss. The LR is stepped per batch."""
    model.train()
    total, count = 0.0, 0
    for x, y in progress(loader, total=len(loader), desc=desc):
        x, y = runtime.to_device(x), y.to(runtime.device)
        optimizer.zero_grad(set_to_none=True)
        with runtime.autocast():
            loss = criterion(model(x).float(), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        total += float(loss.detach()) * y.numel()
        count += y.numel()
    return total / max(1, count)


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, loader: Loader, runtime: Runtime
) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, classes) float64, labels (N,)) in the loader's order, eval mode."""
    model.eval()
    outputs, labels = [], []
    for x, y in loader:
        with runtime.autocast():
            outputs.append(model(runtime.to_device(x)).float().cpu())
        labels.append(y)
    return torch.cat(outputs).double().numpy(), torch.cat(labels).numpy()


def make_loaders(
    train_set: RadiographDataset,
    val_set: RadiographDataset,
    *,
    config: TrainConfig,
    runtime: Runtime,
    epoch: int,
) -> tuple[Loader, Loader]:
    """This epoch's loaders; order and worker seeds come from a generator seeded by the epoch."""
    generator = torch.Generator().manual_seed((config.seed * 1_000_003 + epoch) % 2**63)
    sampler: Sampler[int]
    if config.imbalance == "sampler":
        labels = np.array(train_set.labels)
        weights = 1.0 / np.bincount(labels, minlength=len(CLASS_NAMES))[labels]
        sampler = WeightedRandomSampler(
            weights.tolist(), num_samples=len(labels), replacement=True, generator=generator
        )
    else:
        sampler = RandomSampler(train_set, generator=generator)
    train_set.set_epoch(epoch)
    common: dict[str, Any] = {
        "num_workers": config.num_workers,
        "pin_memory": runtime.device.type == "cuda",
    }
    train = DataLoader(
        train_set,
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=len(train_set) > config.batch_size,  # no batch of one for batch norm
        generator=generator,
        **common,
    )
    val = DataLoader(val_set, batch_size=config.batch_size * 2, shuffle=False, **common)
    return train, val


def class_weights(samples: Sequence[Sample]) -> torch.Tensor:
    """Inverse-frequency weights, normalised so a balanced set would get 1.0 each."""
    counts = np.bincount([s.label for s in samples], minlength=len(CLASS_NAMES))
    if counts.min() == 0:
        raise DataError("the training split needs images of both classes")
    return torch.tensor(counts.sum() / (len(counts) * counts), dtype=torch.float32)


@dataclass
class EarlyStopping:
    """Early stopping on validation AUC: stop after `patience` epochs without a higher one."""

    patience: int
    #: Last finished epoch.
    epoch: int = 0
    best_auc: float = -math.inf
    best_epoch: int = 0
    #: Epochs since the best one.
    stale: int = 0

    def update(self, epoch: int, auc: float) -> bool:
        """Record `epoch`'s AUC; True if it is a new best (equal is not better)."""
        self.epoch = epoch
        if auc > self.best_auc:
            self.best_auc, self.best_epoch, self.stale = auc, epoch, 0
            return True
        self.stale += 1
        return False

    @property
    def stop(self) -> bool:
        return self.stale >= self.patience

    def to_json(self) -> dict[str, Any]:
        return {"auc": self.best_auc, "epoch": self.best_epoch, "stale_epochs": self.stale}
