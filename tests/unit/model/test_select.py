"""runtime = "auto": the choice among measured runtimes (injected timings), the clinical
equivalence check (constructed maps and probabilities), and one real preparation in the child
process choosing among the installed runtimes. No assertion on wall-clock time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dicomnode.model import select
from dicomnode.model.card import ModelCard
from dicomnode.model.classifier import load_classifier
from dicomnode.model.equivalence import (
    MAX_DELTA_P,
    MAX_FP32_DEVIATION,
    compare_maps,
    compare_outputs,
    reproducible,
)
from dicomnode.model.select import Measured, choose
from tests.support import data

CARD = ModelCard(name="t", version="t", architecture="x", input_size=64, mean=(0, 0, 0),
                 std=(1, 1, 1), threshold_low=0.3, threshold_high=0.7)  # fmt: skip


def m(variant: str, ms: float | None, passed: bool = True) -> Measured:
    return Measured(variant, ms, passed)


# --- the choice (injected timings) -------------------------------------------------------------


def test_the_fastest_equivalent_runtime_is_chosen():
    measured = [m("torch", 150), m("onnxruntime", 98), m("onnxruntime-spinning", 74),
                m("openvino-f32", 86), m("openvino-bf16", 52)]  # fmt: skip
    assert choose(measured) == "openvino-bf16"


def test_a_faster_runtime_that_failed_the_check_is_never_chosen():
    measured = [m("torch", 150), m("onnxruntime", 98), m("openvino-bf16", 52, passed=False),
                m("onnxruntime-int8", 30, passed=False)]  # fmt: skip
    assert choose(measured) == "onnxruntime"


def test_torch_only_when_clearly_faster_or_nothing_else_passes():
    assert choose([m("torch", 95), m("onnxruntime", 100)]) == "onnxruntime"  # within 10 %
    assert choose([m("torch", 80), m("onnxruntime", 100)]) == "torch"
    assert choose([m("torch", 150), m("onnxruntime", 90, passed=False)]) == "torch"
    assert choose([]) == "torch"


def test_variants_tried_depend_on_training_and_calibration(monkeypatch):
    monkeypatch.setattr(select, "openvino_capabilities", lambda: {"FP32", "BF16", "INT8"})
    demo, notes = select.variants(trained=False, calibration=True)
    assert "openvino-bf16" not in demo and select.INT8 not in demo
    assert select.DEMO_NOTE in notes
    trained, notes = select.variants(trained=True, calibration=False)
    assert "openvino-bf16" in trained and select.INT8 not in trained
    assert select.NO_CALIBRATION in notes
    full, _ = select.variants(trained=True, calibration=True)
    assert select.INT8 in full
    monkeypatch.setattr(select, "openvino_capabilities", lambda: {"FP32", "INT8"})
    no_bf16, notes = select.variants(trained=True, calibration=True)
    assert "openvino-bf16" not in no_bf16 and any("no bf16" in n for n in notes)


# --- the equivalence check (constructed maps and probabilities) -------------------------------


def blob(cy: float, cx: float, *, size: int = 12, sigma: float = 1.5) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


def logits_for(p: list[float]) -> np.ndarray:
    p_arr = np.asarray(p, np.float64)
    return np.stack([np.zeros_like(p_arr), np.log(p_arr / (1 - p_arr))], axis=1).astype(np.float32)


def test_a_map_a_reader_cannot_tell_apart_passes_where_max_abs_failed():
    reference = blob(4, 7)
    rng = np.random.default_rng(0)
    candidate = reference * 1.03 + rng.normal(0, 0.01, reference.shape).astype(np.float32)
    ref = (logits_for([0.2]), reference[None])
    figures = compare_outputs(ref, (logits_for([0.2005]), candidate[None]), card=CARD)
    assert figures.cam_max_abs_relative > 0.01  # the former 1 % gate refused this
    assert figures.passed, figures.reasons()
    assert figures.min_iou > 0.9 and figures.max_peak_shift == 0.0


def test_a_moved_hot_spot_fails():
    iou, shift = compare_maps(blob(3, 3), blob(8, 8))
    assert iou < 0.8 and shift > 0.05
    figures = compare_outputs((logits_for([0.5]), blob(3, 3)[None]),
                              (logits_for([0.5]), blob(8, 8)[None]), card=CARD)  # fmt: skip
    assert not figures.passed and any("IoU" in r for r in figures.reasons())


def test_two_near_equal_hot_spots_are_a_tie_not_a_shift():
    reference = blob(3, 3) + 0.99 * blob(8, 8)
    candidate = 0.99 * blob(3, 3) + blob(8, 8)  # the other spot is now the argmax
    iou, shift = compare_maps(reference, candidate)
    assert shift == 0.0 and iou > 0.9


def test_empty_maps_agree_and_an_empty_against_a_shown_one_does_not():
    empty = -np.abs(blob(4, 4))  # all evidence against: the node shows no heatmap
    assert compare_maps(empty, empty * 1.1) == (1.0, 0.0)
    assert compare_maps(empty, blob(4, 4)) == (0.0, 1.0)


def test_a_decision_flip_fails_even_with_a_tiny_delta_p():
    maps = np.stack([blob(4, 4)] * 2)
    figures = compare_outputs((logits_for([0.2999, 0.6]), maps),
                              (logits_for([0.3001, 0.6]), maps), card=CARD)  # fmt: skip
    assert figures.max_delta_p < 1e-3 and figures.decisions_differ == 1
    assert not figures.passed
    high = compare_outputs((logits_for([0.6999]), maps[:1]), (logits_for([0.7001]), maps[:1]),
                           card=CARD)  # fmt: skip
    assert high.decisions_differ == 1 and not high.passed


def test_delta_p_bound():
    maps = blob(4, 4)[None]
    ok = compare_outputs((logits_for([0.5]), maps), (logits_for([0.5 + MAX_DELTA_P / 2]), maps),
                         card=CARD)  # fmt: skip
    bad = compare_outputs((logits_for([0.5]), maps), (logits_for([0.5 + 2 * MAX_DELTA_P]), maps),
                          card=CARD)  # fmt: skip
    assert ok.passed and not bad.passed and bad.decisions_differ == 0


# --- one real preparation in the child, choosing among the installed runtimes ----------------


@pytest.fixture(scope="module")
def auto_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("auto")
    load_classifier(None, device="cpu", demo_architecture=data.TINY_ARCH, runtime="auto",
                    cache_dir=cache)  # fmt: skip
    return cache


def test_auto_measures_in_the_child_and_caches_the_choice(auto_cache):
    (manifest_path,) = auto_cache.glob("demo-*.json")
    selection = json.loads(manifest_path.read_text())["selection"]
    variants = {c["variant"] for c in selection["candidates"]}
    assert {"torch", "onnxruntime", "onnxruntime-spinning"} <= variants
    assert "openvino-bf16" not in variants and select.DEMO_NOTE in selection["notes"]
    chosen = next(c for c in selection["candidates"] if c["variant"] == selection["chosen"])
    assert chosen["passed"] and chosen["ms"] > 0 and chosen["check"]["decisions_differ"] == 0
    assert selection["host"] == select.host()
    stamp = manifest_path.stat().st_ino
    again = load_classifier(None, device="cpu", demo_architecture=data.TINY_ARCH,
                            runtime="auto", cache_dir=auto_cache)  # fmt: skip
    assert manifest_path.stat().st_ino == stamp  # reused, not measured again
    assert again.runtime == f"auto ({selection['chosen']})"
    assert again.selection == selection
    assert "auto chose " + selection["chosen"] in select.summary_line(selection)


def test_an_explicit_runtime_still_wins(auto_cache):
    explicit = load_classifier(None, device="cpu", demo_architecture=data.TINY_ARCH,
                               runtime="onnxruntime", cache_dir=auto_cache)  # fmt: skip
    assert explicit.runtime == "onnxruntime" and explicit.selection is None


def test_a_selection_from_another_host_is_measured_again(auto_cache, tmp_path):
    import shutil

    cache = Path(shutil.copytree(auto_cache, tmp_path / "cache"))
    (manifest_path,) = cache.glob("demo-*.json")
    manifest = json.loads(manifest_path.read_text())
    manifest["selection"]["host"]["cpu"] = "another CPU"
    manifest_path.write_text(json.dumps(manifest))
    load_classifier(None, device="cpu", demo_architecture=data.TINY_ARCH, runtime="auto",
                    cache_dir=cache)  # fmt: skip
    assert json.loads(manifest_path.read_text())["selection"]["host"] == select.host()


def test_measure_times_only_what_passed_and_keeps_pre_timed_runs():
    maps = np.stack([blob(4, 4), blob(7, 3)])
    reference = (logits_for([0.2, 0.8]), maps)
    runs = {
        "torch": lambda x: reference,
        "onnxruntime": lambda x: (reference[0] + 1e-6, maps * 1.01),
        "openvino-bf16": lambda x: (logits_for([0.35, 0.8]), maps),  # a decision flips
    }
    measured = {m.variant: m for m in select.measure(
        runs, inputs=np.zeros((2, 3, 8, 8), np.float32), reference=reference, card=CARD,
        rounds=1, failed={"onnxruntime-int8": "cannot build"}, timed={"torch": 123.0})}  # fmt: skip
    assert measured["torch"].ms == 123.0
    assert measured["onnxruntime"].passed and measured["onnxruntime"].ms is not None
    bf16 = measured["openvino-bf16"]
    assert not bf16.passed and bf16.ms is None and "decisions differ" in bf16.note
    assert not measured["onnxruntime-int8"].passed
    assert choose(list(measured.values())) == "onnxruntime"


# --- ill-conditioned inputs (fp32 differs from double precision) are not judged -----------


def maps_and_p(ids: list[int], *, moved: set[int]) -> tuple[np.ndarray, np.ndarray]:
    p = [0.2 if i % 2 else 0.8 for i in ids]
    return logits_for(p), np.stack([blob(7 if i in moved else 3, 4) for i in ids])


@pytest.mark.parametrize("chaotic", [set(), {1}, {0, 3}, {0, 1, 2, 3}])
@pytest.mark.parametrize("chunk", [1, 3, 4])
def test_only_inputs_double_precision_agrees_on_are_checked(chaotic, chunk):
    inputs = np.stack([np.full((3, 8, 8), i, np.float32) for i in range(4)])
    reference = maps_and_p(list(range(4)), moved=set())

    def double(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return maps_and_p([int(x[0, 0, 0]) for x in batch], moved=chaotic)

    keep = reproducible(double, inputs, reference, card=CARD, chunk=chunk)
    assert [i for i in range(4) if not keep[i]] == sorted(chaotic)


def test_double_precision_agrees_with_fp32_on_a_real_network_and_radiograph():
    import torch

    from dicomnode.model.classifier import Classifier
    from dicomnode.model.runtime import check_inputs
    from dicomnode.model.torchnet import float64_run

    classifier = Classifier.demo(architecture=data.TINY_ARCH, device="cpu", runtime="torch")
    net, card = classifier._net, classifier.card
    inputs = check_inputs(card.input_size)
    reference = classifier._backend.run(inputs)
    double = float64_run(net.model, net.cam_weight)
    assert reproducible(double, inputs, reference, card=card).all()
    assert next(net.model.parameters()).dtype == torch.float32  # the served model is kept


def test_a_runtime_cannot_pass_a_check_without_inputs():
    from dicomnode.model.runtime import RuntimeCheckFailed, check_backend

    class Backend:
        def run(self, batch, busy=False):
            return logits_for([0.5] * len(batch)), np.zeros((len(batch), 4, 4), np.float32)

    empty = (np.zeros((0, 2), np.float32), np.zeros((0, 4, 4), np.float32))
    with pytest.raises(RuntimeCheckFailed, match="ill-conditioned"):
        check_backend("onnxruntime", Backend(), empty, inputs=np.zeros((0, 3, 8, 8)), card=CARD)


def test_the_manifest_says_how_many_check_inputs_were_left_out(auto_cache):
    (manifest_path,) = auto_cache.glob("demo-*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["unreproducible_inputs"] == 0  # the seeded inputs, on the tiny demo
    with np.load(auto_cache / manifest["reference"]) as npz:
        assert len(npz["inputs"]) == len(npz["logits"]) == 2


def test_an_input_where_rounding_is_amplified_is_left_out_though_its_map_looks_alike():
    inputs = np.stack([np.full((3, 8, 8), i, np.float32) for i in range(2)])
    reference = maps_and_p([0, 1], moved=set())
    off = MAX_FP32_DEVIATION * 3  # the map a reader sees is the same; rounding is amplified

    def double(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, maps = maps_and_p([int(x[0, 0, 0]) for x in batch], moved=set())
        return logits, maps * np.float32(1 + off) if int(batch[0, 0, 0, 0]) == 1 else maps

    assert compare_maps(reference[1][1], double(inputs[1:])[1][0]) == (1.0, 0.0)
    assert list(reproducible(double, inputs, reference, card=CARD, chunk=1)) == [True, False]
