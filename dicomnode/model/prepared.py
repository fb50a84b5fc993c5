"""Serving without PyTorch: a model prepared once, checked against PyTorch at every load.

With `runtime` auto, onnxruntime or openvino on the CPU, the node needs two things from
PyTorch: the exported graph, and PyTorch's own outputs for the check inputs (the seeded
`runtime.check_inputs` and the package's validation images). With auto the same child also
measures the installed runtimes and records its choice (`select`). The child process
(`python -m dicomnode.model.prepare`) makes them once per model and writes them to the
node's model cache with a manifest. The node then opens the graph, runs the check inputs and
compares with PyTorch's outputs (`dicomnode.model.equivalence`) at every start, but
`import torch` and timm (≈ 650 MB of RSS, ~3 s) never happen in the serving process, and the
child's memory is returned when it exits.

The manifest is keyed by what shapes the outputs: the weights (SHA-256 from the card, or the
demo's architecture and seed) and the installed torch and timm versions, so an upgrade prepares
again. Everything is written atomically (temporary file + rename), manifest last; a damaged or
missing file is prepared again, once.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import structlog

from dicomnode.model.cache import mark_used
from dicomnode.model.card import ModelCard, ModelPackageError, read_package
from dicomnode.model.runtime import (
    Backend,
    Runtime,
    RuntimeCheckFailed,
    check_backend,
    export_key,
    installed_version,
    open_backend,
    open_variant,
)
from dicomnode.model.select import DEFAULT_ROUNDS, TORCH, host, log_served

__all__ = ["installed_version"]

log = structlog.stdlib.get_logger("dicomnode.prepared")

#: 2: the reference holds its check inputs (the package's validation images join the seeded
#: ones); `selection` records what `runtime = "auto"` measured. 3: inputs on which PyTorch does
#: fp32 does not agree with double precision are left out (`equivalence.reproducible`).
MANIFEST_FORMAT = 3
#: A preparation exports and runs the network once: minutes at most even on a slow machine.
PREPARE_TIMEOUT_SECONDS = 900.0
#: Exit status of the child for a model that cannot be loaded (bad package, unknown arch).
EXIT_MODEL_ERROR = 3


@dataclass(frozen=True)
class ModelSource:
    """A model package folder, or the untrained demo (`package` None)."""

    package: Path | None = None
    demo_architecture: str = "efficientnet_b4"
    seed: int = 0
    #: Timing rounds per variant when `runtime = "auto"` measures (`dicomnode.model.select`).
    rounds: int = DEFAULT_ROUNDS

    def manifest_name(self, card: ModelCard | None) -> str:
        versions = f"torch{installed_version('torch')}-timm{installed_version('timm')}"
        if self.package is None:
            return f"demo-{self.demo_architecture}-seed{self.seed}-{versions}.json"
        assert card is not None
        key = export_key(weights_sha256=card.weights_sha256, architecture=card.architecture,
                         input_size=card.input_size, fracture_index=card.fracture_index,
                         classes=len(card.class_names))  # fmt: skip
        return f"package-{card.architecture}-{key}-{versions}.json"

    def args(self) -> list[str]:
        if self.package is None:
            return ["--demo", self.demo_architecture, "--seed", str(self.seed)]
        return ["--package", str(self.package)]


class Loaded(NamedTuple):
    card: ModelCard
    #: None: `runtime = "auto"` measured PyTorch fastest (the caller loads it in-process).
    backend: Backend | None
    files: tuple[Path, ...]  # the cache files the model is served from
    #: What `runtime = "auto"` measured on this host (`select.record`), else None.
    selection: dict[str, Any] | None = None


def load(
    source: ModelSource,
    *,
    runtime: Runtime,
    cache_dir: Path,
    threads: int = 0,
    spinning: bool = False,
    parallel: bool = False,
) -> Loaded:
    """The card and a checked backend for `source` in `runtime` (onnxruntime or openvino),
    preparing the model in a child process when the cache does not have it yet. The cache
    files it is served from are marked used (`dicomnode.model.cache`).

    With `runtime` auto, the child also measures the installed runtimes on this host (once per
    model, host and runtime versions) and the variant it chose is served (`select`).

    Raises ModelPackageError for a model that cannot be loaded and RuntimeCheckFailed (a
    ModelPackageError) for a runtime that does not reproduce PyTorch.
    """
    card = read_package(source.package)[0] if source.package is not None else None
    manifest_path = Path(cache_dir) / source.manifest_name(card)
    select = runtime == Runtime.AUTO
    for attempt in (1, 2):
        prepared = _read(manifest_path)
        if prepared is None or (select and not _selected_here(prepared.manifest)):
            _prepare_in_child(source, Path(cache_dir), select=select, threads=threads)
            prepared = _read(manifest_path)
            if prepared is None:
                raise ModelPackageError(f"preparing the model left no usable {manifest_path}")
        card = card or ModelCard.from_json(prepared.manifest["card"])
        selection = prepared.manifest.get("selection") if select else None
        variant = str(selection["chosen"]) if selection else ""
        if selection:
            log_served(selection)
        if variant == TORCH:
            mark_used(prepared.files)
            return Loaded(card, None, prepared.files, selection)
        try:
            if variant:
                graph = prepared.int8 if variant.endswith("int8") else prepared.onnx
                if graph is None:
                    raise RuntimeCheckFailed(f"runtime {variant}: its graph is not prepared")
                backend = open_variant(variant, graph, threads=threads, parallel=parallel)
            else:
                backend = open_backend(runtime, prepared.onnx, threads=threads,
                                       spinning=spinning, parallel=parallel)  # fmt: skip
        except RuntimeCheckFailed:
            raise
        except Exception as exc:  # a damaged export: prepare again, once
            if attempt == 2:
                raise RuntimeCheckFailed(
                    f"runtime {runtime}: cannot open the graph ({exc})"
                ) from exc
            log.warning("the prepared model cannot be opened: preparing it again",
                        error=type(exc).__name__)  # fmt: skip
            prepared.discard()
            continue
        check_backend(variant or runtime, backend, prepared.reference, inputs=prepared.inputs,
                      card=card)  # fmt: skip
        mark_used(prepared.files)
        return Loaded(card, backend, prepared.files, selection)
    raise AssertionError("unreachable")


def _selected_here(manifest: dict[str, Any]) -> bool:
    """Whether the manifest holds a selection measured on this host (CPU, cores, runtimes)."""
    selection = manifest.get("selection")
    return isinstance(selection, dict) and selection.get("host") == host()


@dataclass
class _Prepared:
    manifest_path: Path
    manifest: dict[str, Any]
    onnx: Path
    reference: tuple[np.ndarray, np.ndarray]
    reference_path: Path
    inputs: np.ndarray
    int8: Path | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        extra = (self.int8,) if self.int8 is not None else ()
        return (self.manifest_path, self.onnx, self.reference_path, *extra)

    def discard(self) -> None:
        for path in (self.manifest_path, self.onnx, self.int8):
            if path is not None:
                path.unlink(missing_ok=True)


def _read(manifest_path: Path) -> _Prepared | None:
    """The prepared model, or None when anything of it is missing or unreadable."""
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
        if manifest.get("format") != MANIFEST_FORMAT:
            return None
        folder = manifest_path.parent
        onnx = folder / manifest["onnx"]
        reference_path = folder / manifest["reference"]
        with np.load(reference_path) as npz:
            reference = (np.asarray(npz["logits"], np.float32), np.asarray(npz["cam"], np.float32))
            inputs = np.asarray(npz["inputs"], np.float32)
        int8 = folder / manifest["int8"] if manifest.get("int8") else None
        if not onnx.is_file() or (int8 is not None and not int8.is_file()):
            return None
        return _Prepared(manifest_path, manifest, onnx, reference, reference_path, inputs, int8)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prepare_in_child(
    source: ModelSource, cache_dir: Path, *, select: bool = False, threads: int = 0
) -> None:
    log.info("preparing the model for serving without PyTorch (once per model)",
             measuring_runtimes=select)  # fmt: skip
    command = [sys.executable, "-m", "dicomnode.model.prepare", "--cache", str(cache_dir),
               *source.args(), "--threads", str(threads)]  # fmt: skip
    if select:
        command += ["--select", "--rounds", str(source.rounds)]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=PREPARE_TIMEOUT_SECONDS)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise ModelPackageError(
            f"preparing the model took over {PREPARE_TIMEOUT_SECONDS:.0f} s"
        ) from exc
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        if done.returncode == EXIT_MODEL_ERROR:
            raise ModelPackageError(reason)
        raise RuntimeCheckFailed(f"preparing the model failed: {reason[:500]}")
