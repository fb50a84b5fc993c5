"""The network, its initial weights, optimizer, learning-rate schedule and device runtime.

The network is built by `dicomnode.model.classifier.create_model`, the node's own constructor, so
the exported weights load into exactly the module the node runs. Input size and normalisation come
from timm's data config at the architecture's test size, as the node's demo model does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from timm.data import resolve_model_data_config

from dicomnode.model.classifier import create_model
from training.config import ConfigError, TrainConfig
from training.data import CLASS_NAMES


def load_backbone_weights(model: torch.nn.Module, path: Path) -> str:
    """Load a local state dict into `model`, skipping tensors of other shapes (the old head)."""
    if path.suffix == ".safetensors":
        state: dict[str, Any] = load_file(path, device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) // 2:
        raise ConfigError(
            f"pretrained_file {path.name} does not fit {type(model).__name__}: only "
            f"{len(fitting)} of {len(own)} tensors match"
        )
    model.load_state_dict(fitting, strict=False)
    return f"file {path.name} ({len(fitting)}/{len(own)} tensors)"


def build_model(
    config: TrainConfig, *, log: Callable[[str], None] = print
) -> tuple[torch.nn.Module, str]:
    """The network and where its initial weights came from ("imagenet (timm)", "random", a file).

    `pretrained` never fails the run: without cached weights and without network, it says
    so through `log` and falls back to a (seeded) random initialisation.
    """
    torch.manual_seed(config.seed)
    classes = len(CLASS_NAMES)
    if config.pretrained_file:
        model = create_model(config.architecture, num_classes=classes)
        return model, load_backbone_weights(model, Path(config.pretrained_file))
    if config.pretrained:
        log(
            f"loading ImageNet weights for {config.architecture} (timm cache, else download; "
            "set HF_HUB_OFFLINE=1 to skip the download attempt)"
        )
        try:
            model = create_model(config.architecture, num_classes=classes, pretrained=True)
            return model, "imagenet (timm)"
        except (OSError, RuntimeError, ValueError) as exc:
            reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            log(
                f"WARNING: ImageNet weights for {config.architecture} are not available "
                f"({reason}); training from RANDOM initialisation instead"
            )
            torch.manual_seed(config.seed)
    return create_model(config.architecture, num_classes=classes), "random"


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: tuple[str, ...] = CLASS_NAMES

    def to_json(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
        }


def model_info(model: torch.nn.Module, config: TrainConfig) -> ModelInfo:
    """Input size (config, else timm's test size as the node's demo uses) and normalisation."""
    data_config = resolve_model_data_config(model, use_test_size=True)
    mean = tuple(float(v) for v in data_config["mean"])
    std = tuple(float(v) for v in data_config["std"])
    return ModelInfo(
        architecture=config.architecture,
        input_size=config.image_size or int(data_config["input_size"][-1]),
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
    )


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; biases and normalisation parameters get no weight decay."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def cosine_with_warmup(
    *, total_steps: int, warmup_steps: int, min_ratio: float
) -> Callable[[int], float]:
    """LR factor per optimizer step: linear warm-up, then cosine down to `min_ratio`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        done = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * done))

    return factor


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Runtime:
    """Device, mixed-precision dtype and memory format: AMP and channels-last on CUDA only."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    @classmethod
    def for_config(cls, config: TrainConfig) -> Runtime:
        device = resolve_device(config.device)
        cuda = device.type == "cuda"
        amp_dtype = None
        if cuda and config.amp:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, amp_dtype, cuda and config.channels_last)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=bool(self.amp_dtype)
        )

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling for float16 only (bfloat16 and float32 do not need it)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
