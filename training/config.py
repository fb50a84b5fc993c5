"""Training configuration: defaults here, overrides from a TOML file (`--config`).

The file has top-level training keys and three tables, `[data]`, `[augment]` and
`[tracking]`; an unknown key is an error (a typo must not silently fall back to a default).
`training/configs/*.toml` are examples. The resolved configuration is stored in every
checkpoint, so a resumed run continues with exactly the settings it started with.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.augment import AugmentConfig

IMBALANCE_MODES = ("loss", "sampler", "none")


class ConfigError(ValueError):
    """The training configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    #: Class folder that means "fracture" (folder layout); others are then "normal".
    positive_class: str = ""
    #: "" (each image its own group), "subfolder", "patient-id" (DICOM PatientID), a patient
    #: list "FILE.csv" (see `training.patients`) or, for the FracAtlas layout, the name of a
    #: `dataset.csv` column. Groups never straddle splits.
    group_by: str = ""
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if not (0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ConfigError("data.val_fraction must be in (0, 1), data.test_fraction in [0, 1)")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError("data.val_fraction + data.test_fraction must be below 0.9")


@dataclass(frozen=True)
class TrackingConfig:
    """Optional experiment loggers, off by default; both write to a local directory (offline)."""

    #: TensorBoard log directory (`--tensorboard DIR`); each run writes a sub-folder by its name.
    tensorboard: str = ""
    #: MLflow file store directory (`--mlflow DIR`); used only if mlflow is installed.
    mlflow: str = ""


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = "efficientnet_b4"
    #: Start from timm's ImageNet weights, found in the local timm/Hugging Face cache only.
    pretrained: bool = False
    #: A local weights file (timm/PyTorch state dict, .safetensors/.pt) to start from
    #: (`--init-weights`).
    pretrained_file: str = ""
    #: Square input size; 0 means the architecture's default from timm's pretrained config.
    image_size: int = 0
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_epochs: float = 1.0
    #: Cosine schedule ends at lr * min_lr_ratio.
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0
    #: "loss" (class-weighted cross-entropy), "sampler" (balanced sampling) or "none".
    imbalance: str = "loss"
    #: Early stopping: epochs without a better validation AUC before stopping.
    patience: int = 7
    seed: int = 42
    num_workers: int = 2
    #: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", …
    device: str = "auto"
    #: Mixed precision and channels-last memory format; used on CUDA only.
    amp: bool = True
    channels_last: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.pretrained and self.pretrained_file:
            raise ConfigError("pretrained and pretrained_file (--init-weights) exclude each other")
        if self.imbalance not in IMBALANCE_MODES:
            raise ConfigError(f"imbalance must be one of {', '.join(IMBALANCE_MODES)}")
        positive = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "patience": self.patience,
        }
        for key, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{key} must be positive")
        if self.image_size and self.image_size < 16:
            raise ConfigError("image_size must be 0 (architecture default) or at least 16")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or self.num_workers < 0:
            raise ConfigError("weight_decay, warmup_epochs and num_workers must not be negative")
        if not 0 <= self.min_lr_ratio <= 1 or not 0 <= self.label_smoothing < 1:
            raise ConfigError("min_lr_ratio must be in [0, 1] and label_smoothing in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Check a TOML value against a dataclass field type (int → float allowed, lists → tuples)."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        items = typing.get_args(annotation)
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise ConfigError(f"{name} must be a list of {len(items)} values")
        return tuple(_coerce(name, v, t) for v, t in zip(value, items, strict=True))
    if origin in (typing.Union, types.UnionType):
        raise ConfigError(f"{name}: union types are not supported in the config")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name} must be a number")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string")
        return value
    raise ConfigError(f"{name}: unsupported type {annotation!r}")


def _build(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a table")
            kwargs[key] = _build(annotation, value, f"{prefix}{key}.")  # type: ignore[arg-type]
        else:
            kwargs[key] = _coerce(prefix + key, value, annotation)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """Build a validated config from a (TOML-shaped) mapping; missing keys take defaults."""
    return typing.cast(TrainConfig, _build(TrainConfig, values))


def load_config(path: str | Path | None) -> TrainConfig:
    """The defaults, overridden by the TOML file at `path` if given."""
    if path is None:
        return TrainConfig()
    try:
        values = tomllib.loads(Path(path).read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    return config_from_dict(values)
