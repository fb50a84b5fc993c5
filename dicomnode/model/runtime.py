"""Inference runtimes: PyTorch eager, ONNX Runtime or OpenVINO for the same network.

This module does not import PyTorch: a node serving with ONNX Runtime or OpenVINO never loads
it (≈ 650 MB of RSS). The PyTorch side (the graph, its export, the in-process check) is in
`dicomnode.model.torchnet`; `dicomnode.model.prepare` runs it once per model in a child process.

Every runtime runs one graph, `torchnet.CamNet`: image batch → (logits, CAM grid). The CAM grid
is the class activation map before ReLU (`classifier` explains the formula), so the heatmap
works in every runtime and costs nothing extra. For ONNX Runtime and OpenVINO the graph is
exported once to ONNX and cached under the node's data dir, keyed by the SHA-256 of the weights,
everything else that shapes the graph and the torch version, then checked against PyTorch at
load with the clinical equivalence check of `dicomnode.model.equivalence` (identical decisions
at both operating points, |Δp| bound, heatmap half-peak overlap and peak), otherwise the runtime
is refused with `RuntimeCheckFailed`.

`runtime = "auto"` measures every installed runtime and precision on the host and serves the
fastest equivalent one (`dicomnode.model.select`): the fastest runtime depends on the CPU
(benchmarks/RESULTS.md: ONNX Runtime fastest on one host, OpenVINO bf16 on another).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import structlog

from dicomnode.config import Runtime
from dicomnode.model.card import ModelCard, ModelPackageError
from dicomnode.model.equivalence import Equivalence, compare_outputs, probabilities

__all__ = ["probabilities"]  # re-exported: callers compute P(fracture) from here

log = structlog.stdlib.get_logger("dicomnode.runtime")

#: Tolerance of the training export's probe check (the package against the checkpoint) and of
#: tests: max |Δ P(fracture)|. The gate on runtimes is `dicomnode.model.equivalence`.
MAX_PROBABILITY_DELTA = 1e-3
#: Bump when the exported graph changes shape or meaning (invalidates cached exports).
EXPORT_FORMAT = 1
OPSET = 17


class RuntimeCheckFailed(ModelPackageError):
    """The exported graph does not reproduce PyTorch within tolerance, or cannot be built."""


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray, *, busy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(B, 3, S, S) float32 → (logits (B, K), CAM grid (B, h, w)), float32.

        `busy`: other images are being classified at the same time in this process; a runtime
        may then run this one on a single core (see `OnnxRuntimeBackend`)."""
        ...


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU, with one session per way of using the cores.

    - The latency session spreads one image over `threads` cores (0: all). With `spinning`,
      its idle pool threads spin between operators instead of sleeping, but only while an
      image is being run: `session.force_spinning_stop` parks them as soon as the run returns,
      so an idle node takes no CPU and the receiving and overlay threads are not starved
      between images.
    - With `parallel`, a second, single-threaded session serves the images run while others
      are in hand (`run(busy=True)`): in a burst each worker then has a core of its own, which
      takes 8–17 % less CPU per image than two runs sharing one pool
      (benchmarks/RESULTS.md). It shares nothing with the first but the graph file (100–200 MB
      more RSS).
    """

    name = "onnxruntime"

    def __init__(self, model_path: Path, *, threads: int = 0, spinning: bool = False,
                 parallel: bool = False) -> None:  # fmt: skip
        self._session = _ort_session(model_path, threads=threads, spinning=spinning)
        self._parallel = (
            _ort_session(model_path, threads=1, spinning=False)
            if parallel and threads != 1
            else None
        )

    @property
    def parallel(self) -> bool:
        return self._parallel is not None

    def run(self, batch: np.ndarray, *, busy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        session = self._parallel if busy and self._parallel is not None else self._session
        logits, cam = session.run(None, {"input": np.ascontiguousarray(batch)})
        return np.asarray(logits, np.float32), np.asarray(cam, np.float32)


def _ort_session(model_path: Path, *, threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])


class OpenVinoBackend:
    """OpenVINO on the CPU. Each calling thread has its own infer request: the compiled
    model's own (`compiled(x)`) is one per model and refuses a second concurrent call ("Infer
    Request is busy"), which the node's worker threads make."""

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
        self._requests = threading.local()
        self.name = f"openvino-{precision}"

    def run(self, batch: np.ndarray, *, busy: bool = False) -> tuple[np.ndarray, np.ndarray]:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        result = request.infer(np.ascontiguousarray(batch))
        # Copies: the request's output tensors are overwritten by its next inference.
        logits, cam = (np.array(result[i], np.float32) for i in (0, 1))
        return logits, cam


def installed_version(distribution: str) -> str:
    """The installed version of `distribution` (it keys the cache), or "none"."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"


def export_key(
    *, weights_sha256: str, architecture: str, input_size: int, fracture_index: int, classes: int
) -> str:
    """Cache key of an exported graph: the weights and everything else that shapes it (the
    CAM weights depend on which of the card's classes is "fracture"), and the installed
    PyTorch, whose exporter writes the graph: a torch upgrade exports again."""
    text = (
        f"{EXPORT_FORMAT}|{OPSET}|{architecture}|{input_size}|{weights_sha256}"
        f"|{fracture_index}/{classes}|torch{installed_version('torch')}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc only; elsewhere a no-op)."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


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


def open_backend(
    runtime: Runtime,
    path: Path,
    *,
    threads: int = 0,
    spinning: bool = False,
    parallel: bool = False,
) -> Backend:
    """An exported graph in ONNX Runtime or OpenVINO (unchecked: see `check_backend`);
    `spinning` and `parallel`: see `OnnxRuntimeBackend`."""
    if runtime == Runtime.OPENVINO:
        return OpenVinoBackend(path, threads=threads)
    return OnnxRuntimeBackend(path, threads=threads, spinning=spinning, parallel=parallel)


def open_variant(variant: str, path: Path, *, threads: int = 0, parallel: bool = False) -> Backend:
    """A backend by its measured name (`select.VARIANTS`: onnxruntime, onnxruntime-spinning,
    onnxruntime-int8, openvino-f32, openvino-bf16); `path` is the variant's graph."""
    if variant.startswith("openvino-"):
        return OpenVinoBackend(path, threads=threads, precision=variant.removeprefix("openvino-"))
    if variant not in ("onnxruntime", "onnxruntime-spinning", "onnxruntime-int8"):
        raise RuntimeCheckFailed(f"unknown runtime variant {variant!r}")
    backend = OnnxRuntimeBackend(path, threads=threads, spinning=variant.endswith("spinning"),
                                 parallel=parallel)  # fmt: skip
    backend.name = variant
    return backend


def check_backend(
    runtime: str,
    backend: Backend,
    reference: tuple[np.ndarray, np.ndarray],
    *,
    inputs: np.ndarray,
    card: ModelCard,
) -> Equivalence:
    """Run `backend` on the check `inputs` and compare with PyTorch's outputs for them
    (`equivalence`): the worst figures, or RuntimeCheckFailed when it is not equivalent."""
    if not len(inputs):
        raise RuntimeCheckFailed(
            f"runtime {runtime} cannot be checked: every check input is ill-conditioned "
            '(PyTorch fp32 differs from double precision there); use runtime = "torch"'
        )
    worst: Equivalence | None = None
    # Every session the backend may use is checked (the single-core one of a `parallel` ONNX
    # Runtime backend as well: thread counts change the order of the sums).
    for busy in (False, True) if getattr(backend, "parallel", False) else (False,):
        try:
            candidate = backend.run(inputs, busy=busy)
        except Exception as exc:  # runtimes raise anything on graphs they cannot run
            raise RuntimeCheckFailed(f"runtime {runtime}: cannot run the graph ({exc})") from exc
        if candidate[0].shape != reference[0].shape or candidate[1].shape != reference[1].shape:
            raise RuntimeCheckFailed(
                f"runtime {runtime} does not reproduce PyTorch: output shapes "
                f"{candidate[0].shape}, {candidate[1].shape} instead of "
                f"{reference[0].shape}, {reference[1].shape}"
            )
        figures = compare_outputs(reference, candidate, card=card)
        if not figures.passed:
            raise RuntimeCheckFailed(
                f"runtime {runtime} does not reproduce PyTorch: "
                f'{"; ".join(figures.reasons())}; use runtime = "torch"'
            )
        if worst is None or figures.max_delta_p > worst.max_delta_p:
            worst = figures
    assert worst is not None
    log.info("inference runtime checked against PyTorch", runtime=backend.name,
             **worst.to_json())  # fmt: skip
    return worst


def resolve_device(device: str) -> str:
    """Resolve "auto" to "cuda" when available, else "cpu"; other values must be torch devices."""
    if device == "cpu" or (device == "auto" and not _nvidia_device_present()):
        return "cpu"  # decided without importing PyTorch
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"unknown device {device!r}") from exc
    return device


def _nvidia_device_present() -> bool:
    """Whether CUDA can possibly be there (an NVIDIA driver is loaded); if not, no need to ask
    PyTorch."""
    return Path("/proc/driver/nvidia").exists() or Path("/dev/nvidia0").exists()
