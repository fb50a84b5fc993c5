"""Inference runtimes: each reproduces PyTorch on real radiographs, exports are cached and
checked, and a graph that does not reproduce PyTorch is refused."""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pydicom
import pytest

from dicomnode.imaging.preprocess import to_grayscale
from dicomnode.model.classifier import Classifier
from dicomnode.model.runtime import (
    MAX_PROBABILITY_DELTA,
    OnnxRuntimeBackend,
    Runtime,
    RuntimeCheckFailed,
    check_backend,
    check_inputs,
)
from tests.support import data

TINY = data.TINY_ARCH
RUNTIMES = [
    "onnxruntime",
    pytest.param(
        "openvino",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("openvino") is None,
            reason="openvino is an optional extra (pip install 'dicomnode[openvino]')",
        ),
    ),
]


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rg3 = to_grayscale(pydicom.dcmread(data.testdata(data.RG3_UNCR)))
    cat = to_grayscale(pydicom.dcmread(data.cat_dx()))
    return [rg3, cat, np.ascontiguousarray(rg3[300:900, :])]  # square, portrait-ish, wide


@pytest.fixture(scope="module")
def reference() -> Classifier:
    return Classifier.demo(architecture=TINY, device="cpu", runtime="torch")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_reproduces_torch_on_real_radiographs(runtime, reference, images, tmp_path):
    classifier = Classifier.demo(
        architecture=TINY, device="cpu", runtime=runtime, cache_dir=tmp_path
    )
    assert classifier.runtime.startswith(runtime)
    for image in images:
        expected, got = reference.predict(image), classifier.predict(image)
        assert abs(expected.probability - got.probability) <= MAX_PROBABILITY_DELTA
        assert got.outcome == expected.outcome
        assert got.heatmap.shape == expected.heatmap.shape
        assert np.abs(got.heatmap - expected.heatmap).max() <= 1e-3


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runtime_batch_equals_single(runtime, images, tmp_path):
    classifier = Classifier.demo(
        architecture=TINY, device="cpu", runtime=runtime, cache_dir=tmp_path
    )
    together = classifier.predict_batch(images)
    for image, batched in zip(images, together, strict=True):
        alone = classifier.predict(image)
        assert abs(alone.probability - batched.probability) <= MAX_PROBABILITY_DELTA
        assert np.abs(alone.heatmap - batched.heatmap).max() <= 1e-3


def test_auto_is_onnxruntime_on_cpu(tmp_path):
    classifier = Classifier.demo(architecture=TINY, device="cpu", runtime="auto",
                                 cache_dir=tmp_path)  # fmt: skip
    assert classifier.runtime == "onnxruntime"


def test_export_is_cached_by_weights(tmp_path):
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime", cache_dir=tmp_path)
    (first,) = tmp_path.glob("*.onnx")
    stamp = first.stat().st_ino  # not mtime: a reuse marks the file used (model_cache)
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime", cache_dir=tmp_path)
    assert first.stat().st_ino == stamp  # reused, not exported again (a new file, new inode)
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime", cache_dir=tmp_path,
                    seed=1)  # fmt: skip
    assert len(list(tmp_path.glob("*.onnx"))) == 2  # other weights, other graph


def test_a_damaged_cached_export_is_made_again(tmp_path, reference, images):
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime", cache_dir=tmp_path)
    (cached,) = tmp_path.glob("*.onnx")
    cached.write_bytes(b"not an onnx graph")
    classifier = Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime",
                                 cache_dir=tmp_path)  # fmt: skip
    assert cached.stat().st_size > 1000
    got, expected = classifier.predict(images[0]), reference.predict(images[0])
    assert abs(got.probability - expected.probability) <= MAX_PROBABILITY_DELTA


def test_a_graph_that_does_not_reproduce_torch_is_refused(tmp_path):
    # Put another model's graph where seed 0's export belongs: the load-time check must see it.
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime", cache_dir=tmp_path)
    (mine,) = tmp_path.glob("*.onnx")
    other_dir = tmp_path / "other"
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime",
                    cache_dir=other_dir, seed=7)  # fmt: skip
    (other,) = other_dir.glob("*.onnx")
    mine.write_bytes(other.read_bytes())
    with pytest.raises(RuntimeCheckFailed, match="does not reproduce PyTorch"):
        Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime",
                        cache_dir=tmp_path)  # fmt: skip


def test_real_efficientnet_b4_in_onnxruntime_matches_torch(images, tmp_path):
    torch_b4 = Classifier.demo(device="cpu", runtime="torch")
    ort_b4 = Classifier.demo(device="cpu", runtime="onnxruntime", cache_dir=tmp_path)
    expected, got = torch_b4.predict(images[0]), ort_b4.predict(images[0])
    assert abs(expected.probability - got.probability) <= MAX_PROBABILITY_DELTA
    assert got.heatmap.shape == expected.heatmap.shape == (512, 512)
    assert np.abs(got.heatmap - expected.heatmap).max() <= 1e-3


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_two_threads_classify_at_once_with_the_results_of_one(runtime, images, tmp_path):
    # The node's workers share one backend; OpenVINO's compiled-model call refused a second
    # concurrent inference ("Infer Request is busy") before each thread had its own request.
    classifier = Classifier.demo(architecture=TINY, device="cpu", runtime=runtime,
                                 cache_dir=tmp_path, parallel=True)  # fmt: skip
    expected = [classifier.predict(image) for image in images]
    start = threading.Barrier(2)
    results: dict[tuple[int, int], float] = {}
    errors: list[BaseException] = []

    def work(thread: int, busy: bool) -> None:
        start.wait()
        try:
            for round_ in range(4):
                for i, image in enumerate(images):
                    got = classifier.predict_batch([image], busy=busy)[0]
                    results[(thread, round_ * len(images) + i)] = abs(
                        got.probability - expected[i].probability
                    ) + float(np.abs(got.heatmap - expected[i].heatmap).max())
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n, n == 1)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 2 * 4 * len(images)
    assert max(results.values()) <= MAX_PROBABILITY_DELTA + 1e-3  # Δp + Δheatmap


def test_a_parallel_backend_has_a_single_threaded_session_for_busy_runs(tmp_path, images):
    classifier = Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime",
                                 cache_dir=tmp_path, parallel=True)  # fmt: skip
    backend = classifier._backend
    assert backend.parallel
    assert backend._parallel.get_session_options().intra_op_num_threads == 1
    assert backend._session.get_session_options().intra_op_num_threads == 0  # all cores
    plain = Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime",
                            cache_dir=tmp_path)  # fmt: skip
    assert not plain._backend.parallel  # one worker: one session, no extra memory


def test_the_load_check_covers_the_busy_session(tmp_path):
    """A backend whose single-core session disagreed with PyTorch is refused, even when its
    main session is right."""
    path, size = _tiny_export(tmp_path)
    reference_backend = OnnxRuntimeBackend(path, parallel=True)
    reference = reference_backend.run(check_inputs(size))

    class BusyIsWrong:
        name, parallel = "onnxruntime", True

        def run(self, batch, *, busy=False):
            logits, cam = reference_backend.run(batch)
            return (logits + np.array([0.0, 5.0], np.float32), cam) if busy else (logits, cam)

    card = Classifier.demo(architecture=TINY, device="cpu", runtime="torch").card
    inputs = check_inputs(size)
    check_backend(Runtime.ONNXRUNTIME, reference_backend, reference, inputs=inputs, card=card)
    with pytest.raises(RuntimeCheckFailed, match="does not reproduce PyTorch"):
        check_backend(Runtime.ONNXRUNTIME, BusyIsWrong(), reference, inputs=inputs, card=card)


def _tiny_export(tmp_path):
    from dicomnode.model.torchnet import export_onnx

    tiny = Classifier.demo(architecture=TINY, device="cpu", runtime="torch")
    size = tiny.card.input_size
    return export_onnx(tiny._net, input_size=size, target=tmp_path / "tiny.onnx"), size


def test_a_torch_upgrade_exports_the_graph_again(monkeypatch):
    from dicomnode.model import runtime

    args = dict(weights_sha256="ab" * 32, architecture="a", input_size=64, fracture_index=1,
                classes=2)  # fmt: skip
    monkeypatch.setattr(runtime, "installed_version", lambda name: "2.14.1")
    before = runtime.export_key(**args)
    monkeypatch.setattr(runtime, "installed_version", lambda name: "2.15.0")
    assert runtime.export_key(**args) != before
