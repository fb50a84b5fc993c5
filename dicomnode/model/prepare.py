"""The child process that prepares a model for serving without PyTorch
(`python -m dicomnode.model.prepare`, started by `dicomnode.model.prepared`).

It imports PyTorch and timm, exports the graph and computes PyTorch's outputs for the check
inputs, writes them atomically to the model cache, manifest last, and exits, so their memory
is returned. Apart from `prepared` (the serving side) so that the classifier, which loads
prepared models, and this child, which builds one with the classifier, import each other in
one direction only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from dicomnode.durable import atomic_write
from dicomnode.model.card import ModelPackageError
from dicomnode.model.classifier import Classifier
from dicomnode.model.equivalence import reproducible
from dicomnode.model.prepared import (
    EXIT_MODEL_ERROR,
    MANIFEST_FORMAT,
    ModelSource,
    installed_version,
)
from dicomnode.model.runtime import check_inputs, export_key, open_variant
from dicomnode.model.select import (
    DEFAULT_ROUNDS,
    INT8,
    NO_CHECK_INPUTS,
    TORCH,
    Run,
    int8_key,
    measure,
    median_ms,
    quantize_int8,
    record,
    validation_inputs,
    variants,
)


def prepare(source: ModelSource, cache_dir: Path, *, select: bool = False,
            rounds: int = DEFAULT_ROUNDS, threads: int = 0) -> Path:  # fmt: skip
    """Export the graph and PyTorch's check outputs for `source`; with `select`, also measure
    the installed runtimes on this host (`dicomnode.model.select`). Returns the manifest path.
    Imports PyTorch: run it in a child process (`python -m dicomnode.model.prepare`)."""
    import torch

    from dicomnode.model.torchnet import ensure_export, float64_run, state_sha256

    if threads:
        torch.set_num_threads(threads)
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
    calibration, validation = validation_inputs(source.package, card)
    candidates = np.concatenate([check_inputs(card.input_size), validation])
    torch_run = classifier._backend.run
    logits, cam = torch_run(candidates)
    net = classifier._net
    keep = reproducible(float64_run(net.model, net.cam_weight), candidates, (logits, cam),
                        card=card)  # fmt: skip
    inputs, logits, cam = candidates[keep], logits[keep], cam[keep]
    reference = f"{card.architecture}-{key}.reference.npz"
    with _atomic(cache_dir / reference) as fh:
        np.savez(fh, logits=logits, cam=cam, inputs=inputs)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "onnx": onnx.name, "reference": reference,
        "card": card.to_json(), "torch": installed_version("torch"),
        "timm": installed_version("timm"), "unreproducible_inputs": int((~keep).sum()),
    }  # fmt: skip
    if select:
        manifest.update(_select(classifier, onnx, inputs, (logits, cam), calibration,
                                key=key, rounds=rounds, threads=threads,
                                timing_input=candidates[:1],
                                left_out=int((~keep).sum())))  # fmt: skip
    path = cache_dir / source.manifest_name(card)
    with _atomic(path) as fh:
        fh.write(json.dumps(manifest, indent=2).encode())
    return path


def _select(
    classifier: Classifier,
    onnx: Path,
    inputs: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
    *,
    key: str,
    rounds: int,
    threads: int,
    timing_input: np.ndarray,
    left_out: int,
) -> dict[str, Any]:
    """The manifest's `selection` (and `int8` graph): every variant checked and timed."""
    card = classifier.card
    names, notes = variants(trained=card.trained, calibration=len(calibration) > 0)
    if left_out:
        notes.append(f"{left_out} check inputs left out: there PyTorch fp32 differs from "
                     "PyTorch in double precision (ill-conditioned)")  # fmt: skip
    if not len(inputs):
        names = [TORCH]
        notes.append(NO_CHECK_INPUTS)
    # PyTorch is timed before any other runtime's thread pool exists in this process, so that
    # at least they do not compete with its OpenMP team (on a loaded 2-vCPU host it still
    # measured 78-962 ms for the B4 demo: see benchmarks/RESULTS.md, issue 22).
    timed = median_ms({TORCH: classifier._backend.run}, timing_input, rounds=rounds)
    runs: dict[str, Run] = {}
    failed: dict[str, str] = {}
    extra: dict[str, Any] = {}
    for name in names:
        try:
            if name == TORCH:
                runs[name] = classifier._backend.run
                continue
            graph = onnx
            if name == INT8:
                graph = quantize_int8(
                    onnx,
                    onnx.with_name(f"{card.architecture}-int8-{int8_key(key, calibration)}.onnx"),
                    calibration,
                )
                extra["int8"] = graph.name
            runs[name] = open_variant(name, graph, threads=threads).run
        except Exception as exc:  # a runtime or quantiser that cannot take the graph
            failed[name] = f"cannot build: {type(exc).__name__}: {str(exc)[:200]}"
    measured = measure(runs, inputs=inputs, reference=reference, card=card, rounds=rounds,
                       failed=failed, timed=timed, timing_input=timing_input)  # fmt: skip
    return {**extra, "selection": record(measured, notes=notes, rounds=rounds)}


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
    parser.add_argument("--select", action="store_true", help='measure runtimes ("auto")')
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="timing rounds")
    parser.add_argument("--threads", type=int, default=0, help="threads (0: all cores)")
    args = parser.parse_args(argv)
    source = ModelSource(Path(args.package) if args.package else None, args.demo, args.seed)
    try:
        print(prepare(source, Path(args.cache), select=args.select, rounds=args.rounds,
                      threads=args.threads))  # fmt: skip
    except ModelPackageError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_MODEL_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
