"""Inference: the node's runtimes side by side for the same model, batch 1 and batched.

    PYTHONPATH=. .venv/bin/python benchmarks/inference.py [--package DIR] [--rounds 8]

Variants: PyTorch eager fp32 (the plain timm model, NCHW, no_grad: the baseline), the node's
torch backend (channels-last, inference_mode), ONNX Runtime fp32 (with and without spinning),
OpenVINO fp32 and bf16 (when installed), ONNX Runtime int8 (static quantisation calibrated on
the package's `validation/` images, when it ships some), and the node's own choice with
`runtime = "auto"` (prepared and measured in its child process, as the node does), a row whose
runtime reads `auto (<chosen>)`. Each variant is timed in a block after two untimed runs (see
`select.median_ms`: interleaved, one runtime's spinning threads may slow the next); the
figure is the median ms/image. Accuracy against eager PyTorch with the node's
equivalence check (`dicomnode.model.equivalence`) on real radiographs (pydicom-data RG3, RG1;
deid-data cat DX), the seeded check inputs and the package's validation images: decision
agreement at both operating points, max |Δp|, heatmap half-peak IoU and peak shift, the former
max-abs CAM figure. Side-by-side overlays (eager | variant) of the radiographs are written to
`benchmarks/overlays/` (or `--overlays DIR`).

Then ONNX Runtime's throughput with two images at once (two calling threads, as the node's two
workers in a burst): sharing the all-cores session, and each on the single-threaded session the
node uses when several images are in hand (`OnnxRuntimeBackend(parallel=True)`,
`run(busy=True)`), against one image at a time; images/s and process CPU ms per image.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import ROOT, machine, median, table, write_json
from benchmarks.overlays import write_overlays
from dicomnode.imaging.preprocess import to_grayscale, to_model_input
from dicomnode.model import select
from dicomnode.model.classifier import Classifier, load_classifier
from dicomnode.model.equivalence import compare_outputs, reproducible
from dicomnode.model.runtime import OnnxRuntimeBackend, check_inputs, open_variant
from dicomnode.model.torchnet import TorchBackend, export_onnx, float64_run


def real_images() -> list[np.ndarray]:
    from tests.support import data

    paths = [data.testdata(data.RG3_UNCR), data.testdata(data.RG1_UNCR), data.cat_dx()]
    return [to_grayscale(pydicom.dcmread(p)) for p in paths]


def real_inputs(classifier: Classifier) -> np.ndarray:
    card = classifier.card
    images = real_images()
    return np.stack(
        [to_model_input(i, input_size=card.input_size, mean=card.mean, std=card.std)
         for i in images]
    )  # fmt: skip


def eager(model: torch.nn.Module, cam_weight: torch.Tensor) -> Callable[[np.ndarray], Any]:
    """Plain PyTorch eager fp32: what a straightforward implementation does."""
    timm_model: Any = model

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            x = torch.from_numpy(batch).contiguous()
            features = timm_model.forward_features(x)
            logits = timm_model.forward_head(features)
            cam = torch.einsum("bchw,c->bhw", features, cam_weight)
        return logits.numpy(), cam.numpy()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", default="", help="model package (default: demo b4)")
    parser.add_argument("--architecture", default="efficientnet_b4")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--threads", type=int, default=0, help="0: all cores")
    parser.add_argument("--out", default=None)
    parser.add_argument("--overlays", type=Path, default=ROOT / "benchmarks" / "overlays",
                        help="folder for the side-by-side heatmap overlays")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    before = machine()
    classifier = (
        Classifier.from_package(args.package, device="cpu")
        if args.package
        else Classifier.demo(architecture=args.architecture, device="cpu")
    )
    card = classifier.card
    net = classifier._net  # the node's graph: logits + CAM
    inputs = real_inputs(classifier)
    variants: dict[str, Callable[[np.ndarray], Any]] = {
        "torch eager fp32": eager(
            classifier.model.to(memory_format=torch.contiguous_format), net.cam_weight
        ),
    }
    node_torch = TorchBackend(net, "cpu")
    calibration, validation = select.validation_inputs(
        Path(args.package) if args.package else None, card
    )
    check_set = np.concatenate([inputs, check_inputs(card.input_size), validation])
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(net, input_size=card.input_size, target=Path(tmp) / "m.onnx")
        variants["node torch (channels-last)"] = node_torch.run
        # PyTorch first, before any other runtime's thread pool exists in this process (on a
        # loaded host its two-thread OpenMP team still measured 83 ms to 4.3 s per image).
        timings = time_blocks(variants, inputs, batches=batches, rounds=args.rounds)
        # The node's choice next, while this process runs nothing that competes with its child.
        auto = load_classifier(args.package or None, device="cpu",
                               demo_architecture=args.architecture, runtime="auto",
                               cache_dir=Path(tmp) / "auto", threads=args.threads)  # fmt: skip
        others: dict[str, Callable[[np.ndarray], Any]] = {}
        names = ["onnxruntime", "onnxruntime-spinning", "openvino-f32", "openvino-bf16"]
        for name in [*names, select.INT8] if len(calibration) else names:
            try:
                graph = onnx_path
                if name == select.INT8:
                    graph = select.quantize_int8(onnx_path, Path(tmp) / "int8.onnx", calibration)
                others[name] = open_variant(name, graph, threads=args.threads).run
            except Exception as exc:  # not installed / no bf16: reported, not fatal
                print(f"{name} skipped: {exc}", file=sys.stderr)
        if not len(calibration):
            print(f"int8: {select.NO_CALIBRATION} (the package has no validation/ images)",
                  file=sys.stderr)  # fmt: skip
        others[auto.runtime] = auto._backend.run  # "auto (<chosen>)"
        timings.update(time_blocks(others, inputs, batches=batches, rounds=args.rounds))
        variants.update(others)
        reference = variants["torch eager fp32"](check_set)
        # As the node does: ill-conditioned inputs (fp32 differs from double) are not judged.
        double = float64_run(classifier.model, net.cam_weight)
        keep = reproducible(double, check_set, reference, card=card)
        left_out = int((~keep).sum())
        check_set, reference = check_set[keep], (reference[0][keep], reference[1][keep])
        outputs = {name: run(check_set) for name, run in variants.items()}
        accuracy = {name: compare_outputs(reference, out, card=card)
                    for name, out in outputs.items()}  # fmt: skip
        write_overlays(args.overlays, inputs=[i for i in real_images()], reference=reference,
                       outputs=outputs, count=len(inputs))  # fmt: skip
        concurrency = two_at_once(onnx_path, variants["torch eager fp32"], inputs[:1],
                                  images=4 * args.rounds)  # fmt: skip
    base = {b: median(timings[("torch eager fp32", b)]) for b in batches}
    measured = {c["variant"] for c in (auto.selection or {}).get("candidates", [])}
    verdict = targets(timings, accuracy, auto_name=auto.runtime, admissible=measured,
                      batch=batches[0])  # fmt: skip
    rows = []
    for (name, batch_size), values in sorted(timings.items(), key=lambda kv: kv[0][1]):
        figures = accuracy[name]
        ms = median(values)
        rows.append({
            "runtime": name, "batch": batch_size, "ms/image": ms,
            "images/s": 1000 / ms, "speed-up vs eager": base[batch_size] / ms,
            "speed-up vs eager b1": base[batches[0]] / ms,
            "decisions agree": f"{figures.inputs - figures.decisions_differ}/{figures.inputs}",
            "max |Δp|": f"{figures.max_delta_p:.1e}",
            "heatmap IoU (min)": f"{figures.min_iou:.3f}",
            "peak shift (max)": f"{figures.max_peak_shift:.3f}",
            "CAM max-abs Δ": f"{figures.cam_max_abs_relative:.1e}",
            "equivalent": "yes" if figures.passed else "NO",
        })  # fmt: skip
    after = machine()
    columns = ["runtime", "batch", "ms/image", "images/s", "speed-up vs eager",
               "speed-up vs eager b1", "decisions agree", "max |Δp|", "heatmap IoU (min)",
               "peak shift (max)", "CAM max-abs Δ", "equivalent"]  # fmt: skip
    print(f"model {card.display_name} ({card.architecture}, {card.input_size}²), "
          f"threads={torch.get_num_threads()}, load before/after {before['load_average']} / "
          f"{after['load_average']}, check set {len(check_set)} inputs ({left_out} left out: "
          "ill-conditioned: PyTorch fp32 differs from double precision there)")  # fmt: skip
    print(table(rows, columns))
    print(f"\n{select.summary_line(auto.selection or {})}")
    print("targets: " + "; ".join(f"{k} {v}" for k, v in verdict.items()))
    print(table(concurrency, ["runtime", "batch 1", "images/s", "CPU ms/image",
                              "vs eager's best"]))  # fmt: skip
    raw = {f"{k[0]}|b{k[1]}": v for k, v in timings.items()}
    write_json("inference", {"machine_before": before, "machine_after": after,
                             "model": card.version, "input_size": card.input_size,
                             "rows": rows, "auto_selection": auto.selection,
                             "targets": verdict, "check_inputs_left_out": left_out,
                             "check_figures": {k: v.to_json() for k, v in accuracy.items()},
                             "two_at_once": concurrency, "raw_ms": raw},
               args.out)  # fmt: skip


def targets(
    timings: dict[tuple[str, int], list[float]],
    accuracy: dict[str, Any],
    *,
    auto_name: str,
    admissible: set[str],
    batch: int,
) -> dict[str, Any]:
    """Issue 22's targets in this run, at `batch`: the automatic choice against eager PyTorch
    fp32, and against the fastest single runtime it may serve for this model (`admissible`:
    the variants the node measures; bf16 and int8 are not among them for the untrained demo)
    that is equivalent (the check above)."""
    ms = {name: median(values) for (name, b), values in timings.items() if b == batch}
    single = {
        name: t
        for name, t in ms.items()
        if name in admissible and name != select.TORCH and accuracy[name].passed
    }
    best = min(single, key=lambda name: single[name]) if single else None
    return {
        "auto": auto_name,
        "auto_vs_eager": round(ms["torch eager fp32"] / ms[auto_name], 2),
        "best_single": best,
        "auto_slower_than_best_single": round(ms[auto_name] / single[best] - 1, 3)
        if best
        else None,
        "auto_decisions_identical": accuracy[auto_name].decisions_differ == 0,
    }


def time_blocks(
    runs: dict[str, Callable[[np.ndarray], Any]],
    inputs: np.ndarray,
    *,
    batches: list[int],
    rounds: int,
) -> dict[tuple[str, int], list[float]]:
    """ms/image of each run at each batch size: variant after variant, each after two untimed
    runs, as `select.median_ms` times them (interleaved, one runtime's pool threads, still
    spinning, may take the cores from the next one)."""
    timings: dict[tuple[str, int], list[float]] = {}
    for batch_size in batches:
        batch = np.concatenate([inputs] * (batch_size // len(inputs) + 1))[:batch_size]
        for name, run in runs.items():
            run(batch)
            run(batch)
            for _ in range(rounds):
                started = time.perf_counter()
                run(batch)
                elapsed = (time.perf_counter() - started) * 1000 / batch_size
                timings.setdefault((name, batch_size), []).append(elapsed)
    return timings


def two_at_once(
    onnx_path: Path, eager_run: Callable[[np.ndarray], Any], one: np.ndarray, *, images: int
) -> list[dict[str, Any]]:
    """images/s and process CPU ms per image, batch 1: one image at a time on all cores; two
    callers sharing them; two callers with one core each (the node in a burst), for ONNX
    Runtime and, at the same concurrency, PyTorch eager."""
    backend = OnnxRuntimeBackend(onnx_path, parallel=True)
    all_cores = torch.get_num_threads()

    def measure(run: Callable[[], Any], callers: int) -> tuple[float, float]:
        def loop() -> None:
            for _ in range(images // callers):
                run()

        run()  # warm-up
        # One caller runs in this thread: PyTorch's OpenMP team is ~25 % slower when driven
        # from a second Python thread at two threads per image (not at one).
        threads = [threading.Thread(target=loop) for _ in range(callers)] if callers > 1 else []
        wall, cpu = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        if not threads:
            loop()
        for thread in threads:
            thread.join()
        done = callers * (images // callers)
        return (done / (time.perf_counter() - wall),
                (time.process_time() - cpu) * 1000 / done)  # fmt: skip

    rows = []
    variants = (
        ("onnxruntime fp32", "one at a time, all cores", 1, lambda: backend.run(one)),
        ("onnxruntime fp32", "two at once, sharing all cores", 2, lambda: backend.run(one)),
        ("onnxruntime fp32", "two at once, one core each (the node's burst)", 2,
         lambda: backend.run(one, busy=True)),
        ("torch eager fp32", "one at a time, all cores", 1, lambda: eager_run(one)),
        ("torch eager fp32", "two at once, one core each", 2, lambda: eager_run(one)),
    )  # fmt: skip
    for runtime, label, callers, run in variants:
        torch.set_num_threads(1 if runtime.startswith("torch") and callers > 1 else all_cores)
        ips, cpu = measure(run, callers)
        rows.append({"runtime": runtime, "batch 1": label, "images/s": ips,
                     "CPU ms/image": cpu})  # fmt: skip
    torch.set_num_threads(all_cores)
    ort_best = max(r["images/s"] for r in rows if r["runtime"] == "onnxruntime fp32")
    eager_best = max(r["images/s"] for r in rows if r["runtime"] == "torch eager fp32")
    for row in rows:
        row["vs eager's best"] = row["images/s"] / eager_best
    rows.append({"runtime": "best / best", "batch 1": "", "images/s": ort_best / eager_best,
                 "CPU ms/image": "", "vs eager's best": ""})  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
