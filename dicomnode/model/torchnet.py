"""The PyTorch side of inference: the CAM graph, its ONNX export, the in-process check.

`dicomnode.model.runtime` (no PyTorch) runs exported graphs; this module builds them. A node serving
with ONNX Runtime or OpenVINO on the CPU runs this module only in a child process
(`dicomnode.model.prepare`), so PyTorch never takes memory in the serving process.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch

from dicomnode.durable import atomic_write
from dicomnode.model.cache import mark_used
from dicomnode.model.card import ModelCard
from dicomnode.model.runtime import (
    OPSET,
    Backend,
    Runtime,
    RuntimeCheckFailed,
    _release_freed_memory,
    check_backend,
    check_inputs,
    export_key,
    open_backend,
)

log = structlog.stdlib.get_logger("dicomnode.runtime")


class CamNet(torch.nn.Module):
    """A timm network with a CAM output: x → (logits, Σ_c w_c F_c) from one forward pass."""

    def __init__(self, model: torch.nn.Module, cam_weight: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("cam_weight", cam_weight.detach().to(torch.float32).clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        timm_model: Any = self.model
        features = timm_model.forward_features(x)
        logits = timm_model.forward_head(features)
        cam = torch.einsum("bchw,c->bhw", features.float(), self.cam_weight)
        return logits.float(), cam


@dataclass
class TorchBackend:
    net: CamNet
    device: str
    name: str = "torch"

    def run(self, batch: np.ndarray, *, busy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits, cam = self.net(x)
        return logits.cpu().numpy(), cam.cpu().numpy()


def float64_run(
    model: torch.nn.Module, cam_weight: torch.Tensor
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`model` (a timm network) in double precision, as (logits, CAM) like `CamNet`: the
    reference of the reference, for `equivalence.reproducible` (a copy: `model` is kept)."""
    double: Any = copy.deepcopy(model).double().eval().cpu()
    weight = cam_weight.detach().cpu().double()

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            features = double.forward_features(torch.from_numpy(batch).double())
            logits = double.forward_head(features)
            cam = torch.einsum("bchw,c->bhw", features, weight)
        return logits.numpy(), cam.numpy()

    return run


def state_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over a state dict (for the demo model, which has no weights file)."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def export_onnx(net: CamNet, *, input_size: int, target: Path) -> Path:
    """Export `net` (dynamic batch) to `target` atomically; returns `target`."""
    net = net.eval().cpu()
    example = torch.zeros(1, 3, input_size, input_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a reader never sees half a graph. The TorchScript exporter writes to a file object.
    with atomic_write(target, prefix=".export-") as fh, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            net,
            (example,),
            fh,  # type: ignore[arg-type]
            dynamo=False,  # the dynamo exporter needs onnxscript; this one needs nothing
            input_names=["input"],
            output_names=["logits", "cam"],
            dynamic_axes={name: {0: "batch"} for name in ("input", "logits", "cam")},
            opset_version=OPSET,
        )
    return target


def ensure_export(net: CamNet, *, input_size: int, path: Path) -> Path:
    """`path`, exported from `net` unless it is already there (then marked used)."""
    if not path.is_file():
        log.info("exporting the model to ONNX (once per weights)")
        export_onnx(net, input_size=input_size, target=path)
    else:
        mark_used([path])
    return path


def _open_checked(
    runtime: Runtime,
    torch_backend: TorchBackend,
    path: Path,
    *,
    input_size: int,
    threads: int,
    spinning: bool = False,
    parallel: bool = False,
    card: ModelCard,
) -> Backend:
    """Open (exporting if needed) and check against PyTorch; a damaged export is made again."""
    net = torch_backend.net
    inputs = check_inputs(input_size)
    reference = torch_backend.run(inputs)
    try:
        try:
            ensure_export(net, input_size=input_size, path=path)
            backend = open_backend(runtime, path, threads=threads, spinning=spinning,
                                   parallel=parallel)  # fmt: skip
        except RuntimeCheckFailed:
            raise
        except Exception:  # a damaged cached export: make it again, once
            path.unlink(missing_ok=True)
            ensure_export(net, input_size=input_size, path=path)
            backend = open_backend(runtime, path, threads=threads, spinning=spinning,
                                   parallel=parallel)  # fmt: skip
    except RuntimeCheckFailed:
        raise
    except Exception as exc:  # exporters and runtimes raise anything on unsupported graphs
        raise RuntimeCheckFailed(f"runtime {runtime}: cannot build the graph ({exc})") from exc
    check_backend(runtime, backend, reference, inputs=inputs, card=card)
    return backend


def build_backend(
    runtime: Runtime,
    *,
    net: CamNet,
    device: str,
    input_size: int,
    weights_sha256: str,
    architecture: str,
    fracture_index: int,
    classes: int,
    cache_dir: Path | None,
    card: ModelCard,
    threads: int = 0,
    spinning: bool = False,
    parallel: bool = False,
) -> Backend:
    """The backend for `runtime` in this process, checked against PyTorch.

    Raises RuntimeCheckFailed.
    """
    torch_backend = TorchBackend(net, device)
    if runtime == Runtime.TORCH:
        return torch_backend
    if device != "cpu":
        raise RuntimeCheckFailed(f"runtime {runtime} runs on the CPU only (device is {device})")
    key = export_key(weights_sha256=weights_sha256, architecture=architecture,
                     input_size=input_size, fracture_index=fracture_index,
                     classes=classes)  # fmt: skip
    with contextlib.ExitStack() as stack:
        if cache_dir is None:  # no cache: a private directory, gone after loading
            cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        path = Path(cache_dir) / f"{architecture}-{key}.onnx"
        backend = _open_checked(runtime, torch_backend, path, input_size=input_size,
                                threads=threads, spinning=spinning, parallel=parallel,
                                card=card)  # fmt: skip
    _release_freed_memory()  # the export and the check leave ~100 MB of freed heap behind
    return backend
