"""Serving without PyTorch: a model prepared once, checked against PyTorch at every load.

With `runtime` onnxruntime or openvino on the CPU (the default), the node needs two things from
PyTorch: the exported graph, and PyTorch's own outputs for the seeded check inputs
(`runtime.check_inputs`). A child process (`python -m dicomnode.model.prepared`) makes both once per
model and writes them to the node's model cache with a manifest. The node then opens the graph,
runs the check inputs and compares with PyTorch's outputs, with the tolerances of
`dicomnode.model.runtime`, at every start: the same check as before, but `import torch` and timm
(≈ 650 MB of RSS, ~3 s) never happen in the serving process, and the child's memory is
returned when it exits.

The manifest is keyed by what shapes the outputs: the weights (SHA-256 from the card, or the
demo's architecture and seed) and the installed torch and timm versions, so an upgrade prepares
again. Everything is written atomically (temporary file + rename), manifest last; a damaged or
missing file is prepared again, once.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import structlog

from dicomnode.durable import atomic_write
from dicomnode.model.cache import mark_used
from dicomnode.model.card import ModelCard, ModelPackageError, read_package
from dicomnode.model.runtime import (
    Backend,
    Runtime,
    RuntimeCheckFailed,
    check_backend,
    export_key,
    open_backend,
)

log = structlog.stdlib.get_logger("dicomnode.prepared")

MANIFEST_FORMAT = 1
#: A preparation exports and runs the network once: minutes at most even on a slow machine.
PREPARE_TIMEOUT_SECONDS = 900.0
#: Exit status of the child for a model that cannot be loaded (bad package, unknown arch).
_EXIT_MODEL_ERROR = 3


@dataclass(frozen=True)
class ModelSource:
    """A model package folder, or the untrained demo (`package` None)."""

    package: Path | None = None
    demo_architecture: str = "efficientnet_b4"
    seed: int = 0

    def manifest_name(self, card: ModelCard | None) -> str:
        versions = f"torch{_version('torch')}-timm{_version('timm')}"
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


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "none"


class Loaded(NamedTuple):
    card: ModelCard
    backend: Backend
    files: tuple[Path, ...]  # the cache files the model is served from


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

    Raises ModelPackageError for a model that cannot be loaded and RuntimeCheckFailed (a
    ModelPackageError) for a runtime that does not reproduce PyTorch.
    """
    from dicomnode.model.classifier import probabilities

    card = read_package(source.package)[0] if source.package is not None else None
    manifest_path = Path(cache_dir) / source.manifest_name(card)
    for attempt in (1, 2):
        prepared = _read(manifest_path)
        if prepared is None:
            _prepare_in_child(source, Path(cache_dir))
            prepared = _read(manifest_path)
            if prepared is None:
                raise ModelPackageError(f"preparing the model left no usable {manifest_path}")
        card = card or ModelCard.from_json(prepared.manifest["card"])
        try:
            backend = open_backend(runtime, prepared.onnx, threads=threads, spinning=spinning,
                                   parallel=parallel)  # fmt: skip
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
        check_backend(runtime, backend, prepared.reference, input_size=card.input_size,
                      probability=functools.partial(probabilities, card=card))  # fmt: skip
        mark_used(prepared.files)
        return Loaded(card, backend, prepared.files)
    raise AssertionError("unreachable")


@dataclass
class _Prepared:
    manifest_path: Path
    manifest: dict[str, Any]
    onnx: Path
    reference: tuple[np.ndarray, np.ndarray]
    reference_path: Path

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.manifest_path, self.onnx, self.reference_path)

    def discard(self) -> None:
        for path in (self.manifest_path, self.onnx):
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
        if not onnx.is_file():
            return None
        return _Prepared(manifest_path, manifest, onnx, reference, reference_path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _prepare_in_child(source: ModelSource, cache_dir: Path) -> None:
    log.info("preparing the model for serving without PyTorch (once per model)")
    command = [sys.executable, "-m", "dicomnode.model.prepared", "--cache", str(cache_dir),
               *source.args()]  # fmt: skip
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
        if done.returncode == _EXIT_MODEL_ERROR:
            raise ModelPackageError(reason)
        raise RuntimeCheckFailed(f"preparing the model failed: {reason[:500]}")


# --- the child ------------------------------------------------------------------------------


def prepare(source: ModelSource, cache_dir: Path) -> Path:
    """Export the graph and PyTorch's check outputs for `source`; returns the manifest path.
    Imports PyTorch: run it in a child process (`python -m dicomnode.model.prepared`)."""
    from dicomnode.model.classifier import Classifier
    from dicomnode.model.runtime import check_inputs
    from dicomnode.model.torchnet import ensure_export, state_sha256

    if source.package is not None:
        classifier = Classifier.from_package(source.package, device="cpu", runtime="torch")
    else:
        classifier = Classifier.demo(architecture=source.demo_architecture, device="cpu",
                                     seed=source.seed, runtime="torch")  # fmt: skip
    card = classifier.card
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = export_key(weights_sha256=card.weights_sha256 or state_sha256(classifier.model),
                     architecture=card.architecture, input_size=card.input_size,
                     fracture_index=card.fracture_index,
                     classes=len(card.class_names))  # fmt: skip
    onnx = ensure_export(classifier._net, input_size=card.input_size,
                         path=cache_dir / f"{card.architecture}-{key}.onnx")  # fmt: skip
    logits, cam = classifier._backend.run(check_inputs(card.input_size))
    reference = f"{card.architecture}-{key}.reference.npz"
    with _atomic(cache_dir / reference) as fh:
        np.savez(fh, logits=logits, cam=cam)
    manifest = {"format": MANIFEST_FORMAT, "onnx": onnx.name, "reference": reference,
                "card": card.to_json(), "torch": _version("torch"),
                "timm": _version("timm")}  # fmt: skip
    path = cache_dir / source.manifest_name(card)
    with _atomic(path) as fh:
        fh.write(json.dumps(manifest, indent=2).encode())
    return path


@contextlib.contextmanager
def _atomic(target: Path) -> Iterator[BinaryIO]:
    with atomic_write(target, prefix=".prepare-") as fh:
        yield fh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare a model for serving without PyTorch")
    parser.add_argument("--cache", required=True, help="the node's model cache directory")
    parser.add_argument("--package", default=None, help="model package folder")
    parser.add_argument("--demo", default="efficientnet_b4", help="demo architecture")
    parser.add_argument("--seed", type=int, default=0, help="demo seed")
    args = parser.parse_args(argv)
    source = ModelSource(Path(args.package) if args.package else None, args.demo, args.seed)
    try:
        print(prepare(source, Path(args.cache)))
    except ModelPackageError as exc:
        print(str(exc), file=sys.stderr)
        return _EXIT_MODEL_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
