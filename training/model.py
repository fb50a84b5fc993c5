"""The network, its initial weights, optimizer, learning-rate schedule and device runtime.

The network is built by `dicomnode.model.classifier.create_model`, the node's own constructor, so
the exported weights load into exactly the module the node runs. Input size and normalisation come
from timm's data config at the architecture's test size, as the node's demo model does.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.data import resolve_model_data_config
from timm.models import get_pretrained_cfg

from dicomnode.model.classifier import create_model
from training.config import ConfigError, TrainConfig
from training.data import CLASS_NAMES


def load_backbone_weights(model: torch.nn.Module, path: Path) -> str:
    """Load a local state dict into `model`, skipping tensors of other shapes (the old head)."""
    if not path.is_file():
        raise ConfigError(f"initial weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state: dict[str, Any] = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "state_dict_ema"):
                if isinstance(state.get(key), dict):
                    state = state[key]
                    break
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as exc:
        raise ConfigError(f"cannot read initial weights {path.name}: {exc}") from exc
    if not isinstance(state, dict):
        raise ConfigError(f"{path.name} is not a state dict")
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) // 2:
        raise ConfigError(
            f"initial weights {path.name} do not fit {type(model).__name__}: only "
            f"{len(fitting)} of {len(own)} tensors match"
        )
    model.load_state_dict(fitting, strict=False)
    return f"file {path.name} ({len(fitting)}/{len(own)} tensors)"


def _hf_hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(home) / "hub"


def cached_pretrained_file(architecture: str) -> tuple[Path | None, list[str]]:
    """timm's ImageNet weights for `architecture` if already on this machine, and where it looked.

    Only looks: the Hugging Face hub cache (`HF_HUB_CACHE`, `HF_HOME`; timm's weights live in
    `timm/<architecture>.<tag>`) and torch hub's checkpoint folder (older timm URLs). Nothing is
    ever downloaded, so training on an offline machine is the same as anywhere.
    """
    cfg = get_pretrained_cfg(architecture)
    if cfg is None:
        raise ConfigError(f"timm has no pretrained weights for {architecture!r}")
    looked: list[str] = []
    hub = _hf_hub_cache()
    if cfg.hf_hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(cfg.hf_hub_id, filename, cache_dir=hub)
            if isinstance(found, str):
                return Path(found), looked
        looked.append(f"{hub} (Hugging Face repo {cfg.hf_hub_id})")
    if isinstance(cfg.url, str) and cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if path.is_file():
            return path, looked
        looked.append(str(path))
    return None, looked


def build_model(
    config: TrainConfig, *, log: Callable[[str], None] = print
) -> tuple[torch.nn.Module, str]:
    """The network and where its initial weights came from ("imagenet (timm cache)", "random",
    a file).

    `pretrained_file` (`--init-weights`) loads a local state dict; `pretrained` loads timm's
    ImageNet weights from the local cache only. Either one missing is an error that says what
    to do: a run the user asked to start from ImageNet must not silently start from random.
    """
    torch.manual_seed(config.seed)
    model = create_model(config.architecture, num_classes=len(CLASS_NAMES))
    if config.pretrained_file:
        return model, load_backbone_weights(model, Path(config.pretrained_file))
    if config.pretrained:
        path, looked = cached_pretrained_file(config.architecture)
        if path is None:
            raise ConfigError(
                f"--pretrained: timm's ImageNet weights for {config.architecture} are not on "
                f"this machine (looked in {'; '.join(looked)}); nothing is downloaded. Copy "
                "them into the cache or pass --init-weights FILE (see training/README.md, "
                "'Offline machines')"
            )
        log(f"initial weights: timm ImageNet weights from the local cache ({path.name})")
        loaded = load_backbone_weights(model, path)
        return model, f"imagenet (timm cache; {loaded})"
    return model, "random"


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
