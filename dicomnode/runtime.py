"""Inference runtimes: PyTorch eager, ONNX Runtime or OpenVINO for the same network.

Every runtime runs one graph, `CamNet`: image batch → (logits, CAM grid). The CAM grid is the
class activation map before ReLU (`classifier` explains the formula), so the heatmap works in
every runtime and costs nothing extra. For ONNX Runtime and OpenVINO the graph is exported
once to ONNX and cached under the node's data dir, keyed by the SHA-256 of the weights (and of
everything else that shapes the graph), then checked against PyTorch at load: on seeded inputs
the fracture probability may differ by at most `MAX_PROBABILITY_DELTA` and the CAM by 1 % of
its range, otherwise the runtime is refused with `RuntimeCheckFailed`.

Measured (benchmarks/RESULTS.md): ONNX Runtime fp32 is 1.7× (2-vCPU Intel Xeon) to 2.4× (2-vCPU
Zen 4) faster than PyTorch eager at batch 1, at equal outputs (≈1e-6), and always installed, so
`auto` means ONNX Runtime on CPU and PyTorch on CUDA. OpenVINO fp32 was 13 % faster still on the
Xeon and 1.6× slower on the Zen 4.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog
import torch

from dicomnode.card import ModelPackageError

log = structlog.stdlib.get_logger("dicomnode.runtime")

#: Tolerance of the load-time check (and of the tests): max |Δ P(fracture)|.
MAX_PROBABILITY_DELTA = 1e-3
#: Tolerance of the CAM grid, relative to the reference grid's largest magnitude.
MAX_CAM_RELATIVE_DELTA = 1e-2
#: Bump when the exported graph changes shape or meaning (invalidates cached exports).
EXPORT_FORMAT = 1
_OPSET = 17


class Runtime(StrEnum):
    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class RuntimeCheckFailed(ModelPackageError):
    """The exported graph does not reproduce PyTorch within tolerance, or cannot be built."""


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) float32 → (logits (B, K), CAM grid (B, h, w)), float32."""
        ...


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

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits, cam = self.net(x)
        return logits.cpu().numpy(), cam.cpu().numpy()


class OnnxRuntimeBackend:
    name = "onnxruntime"

    def __init__(self, model_path: Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads must not spin: the SCP and the SC builder share these cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, cam = self._session.run(None, {"input": np.ascontiguousarray(batch)})
        return np.asarray(logits, np.float32), np.asarray(cam, np.float32)


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, model_path: Path, *, threads: int = 0, precision: str = "f32") -> None:
        try:
            import openvino as ov
        except ImportError as exc:
            raise RuntimeCheckFailed(
                "runtime openvino: the openvino package is not installed "
                "(pip install 'dicomnode[openvino]')"
            ) from exc
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        self._compiled = core.compile_model(str(model_path), "CPU", config)
        self.name = f"openvino-{precision}"

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self._compiled(np.ascontiguousarray(batch))
        logits, cam = (np.asarray(result[i], np.float32) for i in (0, 1))
        return logits, cam


def export_key(*, weights_sha256: str, architecture: str, input_size: int) -> str:
    """Cache key of an exported graph: the weights and everything else that shapes it."""
    text = f"{EXPORT_FORMAT}|{_OPSET}|{architecture}|{input_size}|{weights_sha256}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".export-", suffix=".part")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
            torch.onnx.export(
                net,
                (example,),
                tmp,
                dynamo=False,  # the dynamo exporter needs onnxscript; this one needs nothing
                input_names=["input"],
                output_names=["logits", "cam"],
                dynamic_axes={name: {0: "batch"} for name in ("input", "logits", "cam")},
                opset_version=_OPSET,
            )
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)  # atomic: a reader never sees half a graph
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return target


def _open_checked(
    runtime: Runtime,
    torch_backend: TorchBackend,
    path: Path,
    *,
    input_size: int,
    threads: int,
    probability: Callable[[np.ndarray], np.ndarray],
) -> tuple[Backend, float, float]:
    """Open (exporting if needed) and compare with PyTorch: (backend, max |Δp|, CAM delta)."""
    net = torch_backend.net
    try:
        try:
            backend = _open(runtime, net, path, input_size=input_size, threads=threads)
        except RuntimeCheckFailed:
            raise
        except Exception:  # a damaged cached export: make it again, once
            path.unlink(missing_ok=True)
            backend = _open(runtime, net, path, input_size=input_size, threads=threads)
        batch = check_inputs(input_size)
        dp, dcam = compare(torch_backend.run(batch), backend.run(batch), probability=probability)
    except RuntimeCheckFailed:
        raise
    except Exception as exc:  # exporters and runtimes raise anything on unsupported graphs
        raise RuntimeCheckFailed(f"runtime {runtime}: cannot build the graph ({exc})") from exc
    return backend, dp, dcam


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; elsewhere a no-op)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _open(runtime: Runtime, net: CamNet, path: Path, *, input_size: int, threads: int) -> Backend:
    if not path.is_file():
        log.info("exporting the model to ONNX (once per weights)", runtime=str(runtime))
        export_onnx(net, input_size=input_size, target=path)
    if runtime == Runtime.OPENVINO:
        return OpenVinoBackend(path, threads=threads)
    return OnnxRuntimeBackend(path, threads=threads)


def check_inputs(input_size: int, *, count: int = 2, seed: int = 0) -> np.ndarray:
    """Seeded, radiograph-like normalised inputs for the load-time check (batch of `count`)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:input_size, 0:input_size] / max(1, input_size - 1)
    out = np.empty((count, 3, input_size, input_size), np.float32)
    for i in range(count):
        smooth = 0.5 + 0.3 * np.sin(6.0 * xx + i) * np.cos(4.0 * yy - i)
        image = smooth + 0.2 * rng.standard_normal((input_size, input_size))
        out[i] = ((image - 0.45) / 0.225).astype(np.float32)[None]
    return out


def compare(
    reference: tuple[np.ndarray, np.ndarray],
    candidate: tuple[np.ndarray, np.ndarray],
    *,
    probability: Callable[[np.ndarray], np.ndarray],
) -> tuple[float, float]:
    """(max |Δp|, max |Δcam| / max |cam|) between two runtimes' outputs."""
    dp = float(np.max(np.abs(probability(reference[0]) - probability(candidate[0]))))
    scale = max(float(np.max(np.abs(reference[1]))), 1e-12)
    dcam = float(np.max(np.abs(reference[1] - candidate[1]))) / scale
    return dp, dcam


def build_backend(
    runtime: Runtime,
    *,
    net: CamNet,
    device: str,
    input_size: int,
    weights_sha256: str,
    architecture: str,
    cache_dir: Path | None,
    probability: Callable[[np.ndarray], np.ndarray],
    threads: int = 0,
) -> Backend:
    """The backend for `runtime`, checked against PyTorch. Raises RuntimeCheckFailed."""
    torch_backend = TorchBackend(net, device)
    if runtime == Runtime.TORCH:
        return torch_backend
    if device != "cpu":
        raise RuntimeCheckFailed(f"runtime {runtime} runs on the CPU only (device is {device})")
    key = export_key(
        weights_sha256=weights_sha256, architecture=architecture, input_size=input_size
    )
    with contextlib.ExitStack() as stack:
        if cache_dir is None:  # no cache: a private directory, gone after loading
            cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        path = Path(cache_dir) / f"{architecture}-{key}.onnx"
        backend, dp, dcam = _open_checked(
            runtime, torch_backend, path, input_size=input_size, threads=threads,
            probability=probability,
        )  # fmt: skip
    if dp > MAX_PROBABILITY_DELTA or dcam > MAX_CAM_RELATIVE_DELTA:
        raise RuntimeCheckFailed(
            f"runtime {runtime} does not reproduce PyTorch: max |Δp| = {dp:.2e} "
            f"(allowed {MAX_PROBABILITY_DELTA:.0e}), CAM differs by {dcam:.1%} "
            f'(allowed {MAX_CAM_RELATIVE_DELTA:.0%}); use runtime = "torch"'
        )
    _release_freed_memory()  # the export and the check leave ~100 MB of freed heap behind
    log.info("inference runtime checked against PyTorch", runtime=backend.name,
             max_delta_p=float(f"{dp:.2e}"), cam_delta=float(f"{dcam:.2e}"))  # fmt: skip
    return backend
