"""`runtime = "auto"`: measure every installed runtime and precision on this host and serve the
fastest one that is equivalent to PyTorch (`dicomnode.model.equivalence`).

Which runtime is fastest depends on the CPU: on one 2-vCPU Zen 4 ONNX Runtime was fastest and
OpenVINO bf16 slower; on a 2-vCPU Xeon with AVX-512 bf16 OpenVINO bf16 was 3× PyTorch
(issue 22). So the child process that prepares the model (`dicomnode.model.prepare`) times each
variant at batch 1 (a block of rounds per variant after two untimed runs; the median), checks
each against PyTorch on the check inputs, and records the choice, the timings and the check's
figures in the prepared model's manifest. `choose` is pure and tested with injected timings.

Variants: `torch` (PyTorch, channels-last: the reference itself), `onnxruntime`,
`onnxruntime-spinning`, `openvino-f32` and `openvino-bf16` (when OpenVINO is installed and the
CPU reports BF16), `onnxruntime-int8` (ONNX Runtime static quantisation, QDQ, calibrated on half
of the package's own validation images: `<package>/validation/`). Lower precision is tried only
on a trained package: on the untrained demo the check compares random outputs, which says
nothing about a real model, so the demo is served in fp32 (recorded as a note).

PyTorch in the serving process costs ~650 MB of RSS: `torch` is chosen only when it is faster
than the best other variant by more than `TORCH_MARGIN`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from dicomnode.model.card import ModelCard
from dicomnode.model.equivalence import compare_outputs
from dicomnode.model.runtime import installed_version

log = structlog.stdlib.get_logger("dicomnode.select")

TORCH = "torch"
INT8 = "onnxruntime-int8"
#: PyTorch must be this much faster than the best other variant to be served (its RSS).
TORCH_MARGIN = 0.10
#: Timed rounds per variant at preparation (each a batch-1 inference, after a warm-up).
DEFAULT_ROUNDS = 5
VALIDATION_DIR = "validation"
#: Validation images used: every second one calibrates int8, the others join the check inputs.
MAX_CALIBRATION, MAX_CHECK = 16, 8
NO_CALIBRATION = "no calibration set, int8 not tried"
NO_CHECK_INPUTS = "every check input is ill-conditioned: only PyTorch is served"
DEMO_NOTE = "untrained demo: bf16 and int8 not tried (a check on random weights means nothing)"

Run = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Measured:
    """One variant on this host: median ms/image at batch 1 and the check's figures."""

    variant: str
    ms: float | None
    passed: bool
    check: dict[str, Any] | None = None
    note: str = ""


def choose(measured: Sequence[Measured], *, torch_margin: float = TORCH_MARGIN) -> str:
    """The fastest variant that passed the check; PyTorch only when it beats the best other
    by more than `torch_margin` (and whenever nothing else passed)."""
    ok = [m for m in measured if m.passed and m.ms is not None]
    others = sorted((m for m in ok if m.variant != TORCH), key=lambda m: float(m.ms or 0.0))
    torch = next((m for m in ok if m.variant == TORCH), None)
    if not others:
        return TORCH
    best = others[0]
    if torch is not None and float(torch.ms or 0.0) < float(best.ms or 0.0) * (1 - torch_margin):
        return TORCH
    return best.variant


def host() -> dict[str, Any]:
    """What the timings depend on: a selection made on another host (or with other runtime
    versions) is measured again."""
    cpu, flags = "", set[str]()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8")
    return {"cpu": cpu, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags],
            "onnxruntime": installed_version("onnxruntime"),
            "openvino": installed_version("openvino")}  # fmt: skip


def openvino_capabilities() -> set[str]:
    """OpenVINO's CPU capabilities (BF16, INT8, …), or empty when it is not installed."""
    try:
        import openvino as ov

        return set(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # not installed, or no CPU plugin
        return set()


def variants(*, trained: bool, calibration: bool) -> tuple[list[str], list[str]]:
    """The variants to measure here, and notes on those not tried."""
    out, notes = [TORCH, "onnxruntime", "onnxruntime-spinning"], []
    caps = openvino_capabilities()
    if caps:
        out.append("openvino-f32")
    else:
        notes.append("openvino not installed")
    if not trained:
        return out, [*notes, DEMO_NOTE]
    if "BF16" in caps:
        out.append("openvino-bf16")
    elif caps:
        notes.append("the CPU has no bf16 (OpenVINO): bf16 not tried")
    if calibration:
        out.append(INT8)
    else:
        notes.append(NO_CALIBRATION)
    return out, notes


def validation_inputs(package: Path | None, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, check) model inputs from the package's own validation images: every
    second image calibrates int8, the others are checked, so int8 is not checked on the images
    it was calibrated on. Empty arrays without such images."""
    from dicomnode.imaging.files import load_image
    from dicomnode.imaging.header import NotClassifiable
    from dicomnode.imaging.preprocess import to_model_input

    empty = np.zeros((0, 3, card.input_size, card.input_size), np.float32)
    folder = package / VALIDATION_DIR if package is not None else None
    if folder is None or not folder.is_dir():
        return empty, empty
    inputs = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            image = load_image(path)
        except (NotClassifiable, OSError, ValueError):
            continue
        inputs.append(to_model_input(image, input_size=card.input_size, mean=card.mean,
                                     std=card.std))  # fmt: skip
        if len(inputs) >= MAX_CALIBRATION + MAX_CHECK:
            break
    if not inputs:
        return empty, empty
    stacked = np.stack(inputs).astype(np.float32)
    return stacked[0::2][:MAX_CALIBRATION], stacked[1::2][:MAX_CHECK]


def int8_key(key: str, calibration: np.ndarray) -> str:
    """Cache key of the int8 graph: the fp32 graph's key and the calibration inputs."""
    digest = hashlib.sha256(key.encode())
    digest.update(np.ascontiguousarray(calibration).tobytes())
    return digest.hexdigest()[:32]


def quantize_int8(graph: Path, target: Path, calibration: np.ndarray) -> Path:
    """ONNX Runtime static quantisation (QDQ, per-channel weights, int8 activations)
    calibrated on `calibration`; written atomically to `target` (kept when present)."""
    if target.is_file():
        return target
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter([{"input": row[None]} for row in calibration])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._rows, None)

    partial = target.with_name(f".prepare-{target.name}.part")
    try:
        quantize_static(str(graph), str(partial), _Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)  # fmt: skip
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def median_ms(runs: dict[str, Run], one: np.ndarray, *, rounds: int) -> dict[str, float]:
    """Median ms of each run on `one` (batch 1), run after run: two untimed calls, then
    `rounds` timed ones. Not interleaved: in one process a runtime's pool threads may still
    spin after it returns and take the cores from the next one. (PyTorch's OpenMP team
    measured 87 to 962 ms for EfficientNet-B4 on a loaded 2-vCPU host, whichever way it was
    timed: see benchmarks/RESULTS.md, issue 22.)"""
    out: dict[str, float] = {}
    for name, run in runs.items():
        run(one)
        run(one)
        times = []
        for _ in range(max(1, rounds)):
            started = time.perf_counter()
            run(one)
            times.append((time.perf_counter() - started) * 1000)
        out[name] = float(np.median(times))
    return out


def measure(
    runs: dict[str, Run],
    *,
    inputs: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray],
    card: ModelCard,
    rounds: int,
    failed: dict[str, str] | None = None,
    timed: dict[str, float] | None = None,
    timing_input: np.ndarray | None = None,
) -> list[Measured]:
    """Check every run against `reference` on `inputs`; time those that pass (`timed`: runs
    timed already, e.g. PyTorch before any other runtime's threads existed)."""
    checked: dict[str, Run] = {}
    out: dict[str, Measured] = {}
    for name, run in runs.items():
        try:
            figures = compare_outputs(reference, run(inputs), card=card)
        except Exception as exc:  # a runtime that cannot run the graph
            out[name] = Measured(name, None, False, None, f"cannot run: {str(exc)[:200]}")
            continue
        out[name] = Measured(name, None, figures.passed, figures.to_json(),
                             "; ".join(figures.reasons()))  # fmt: skip
        if figures.passed:
            checked[name] = run
    pending = {name: run for name, run in checked.items() if name not in (timed or {})}
    times = {**{k: v for k, v in (timed or {}).items() if k in checked},
             **median_ms(pending, inputs[:1] if timing_input is None else timing_input,
                         rounds=rounds)}  # fmt: skip
    for name, ms in times.items():
        out[name] = Measured(name, round(ms, 2), True, out[name].check)
    for name, reason in (failed or {}).items():
        out[name] = Measured(name, None, False, None, reason)
    return list(out.values())


def record(measured: list[Measured], *, notes: list[str], rounds: int) -> dict[str, Any]:
    """The selection as cached in the manifest and shown by doctor, /api/model and the log."""
    chosen = choose(measured)
    timed = {m.variant: m.ms for m in measured if m.ms is not None}
    summary = {
        "chosen": chosen,
        "ms_per_image": timed,
        "speedup_vs_torch": round(timed[TORCH] / timed[chosen], 2)
        if timed.get(TORCH) and timed.get(chosen)
        else None,
        "candidates": [asdict(m) for m in measured],
        "notes": notes,
        "rounds": rounds,
        "host": host(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log.info("runtime auto: measured on this host", chosen=chosen, ms_per_image=timed,
             refused=[m.variant for m in measured if not m.passed], notes=notes)  # fmt: skip
    return summary


def log_served(selection: dict[str, Any]) -> None:
    """The start-up log's line on what `auto` serves and why (the measured figures)."""
    log.info("runtime auto: serving the fastest runtime equivalent to PyTorch",
             chosen=selection.get("chosen"), ms_per_image=selection.get("ms_per_image"),
             speedup_vs_torch=selection.get("speedup_vs_torch"),
             refused=[c["variant"] for c in selection.get("candidates", [])
                      if not c.get("passed")],
             notes=selection.get("notes"), measured_at=selection.get("measured_at"))  # fmt: skip


def summary_line(selection: dict[str, Any]) -> str:
    """One line for doctor: the choice, its time against PyTorch's, what was refused."""
    ms = selection.get("ms_per_image", {})
    chosen = selection.get("chosen", "?")
    refused = [c["variant"] for c in selection.get("candidates", []) if not c.get("passed")]
    line = f"auto chose {chosen} ({ms.get(chosen, '?')} ms/image; torch {ms.get(TORCH, '?')} ms)"
    if refused:
        line += f"; refused by the equivalence check: {', '.join(refused)}"
    return line + "".join(f"; {n}" for n in selection.get("notes", []))
