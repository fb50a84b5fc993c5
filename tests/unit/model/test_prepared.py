"""Serving without PyTorch: the model is prepared once in a child process, checked against
PyTorch's outputs at every load, and the serving process never imports torch or timm."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicomnode.imaging.preprocess import to_grayscale
from dicomnode.model.card import ModelPackageError
from dicomnode.model.classifier import Classifier, load_classifier
from dicomnode.model.prepared import MANIFEST_FORMAT
from dicomnode.model.runtime import RuntimeCheckFailed
from tests.support import data
from tests.support.models import tiny_package

TINY = data.TINY_ARCH


def load(cache: Path, *, runtime: str = "onnxruntime", package: Path | None = None,
         seed_arch: str = TINY) -> Classifier:  # fmt: skip
    return load_classifier(package, device="cpu", demo_architecture=seed_arch, runtime=runtime,
                           cache_dir=cache)  # fmt: skip


@pytest.fixture(scope="module")
def prepared_once(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("prepared")
    load(cache)
    return cache


@pytest.fixture
def cache(prepared_once, tmp_path) -> Path:
    """A model cache where the tiny demo is already prepared (a copy: tests may damage it)."""
    return Path(shutil.copytree(prepared_once, tmp_path / "cache"))


@pytest.fixture(scope="module")
def rg3() -> np.ndarray:
    return to_grayscale(pydicom.dcmread(data.testdata(data.RG3_UNCR)))


def test_served_without_torch_in_the_process(tmp_path):
    # A fresh interpreter: this test process has imported torch long ago.
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from dicomnode.model.classifier import load_classifier
        for _ in range(2):  # prepares in a child, then reuses the prepared model
            c = load_classifier(None, device="auto", demo_architecture={TINY!r},
                                runtime="onnxruntime", cache_dir=Path({str(tmp_path)!r}))
        import numpy as np
        p = c.predict(np.full((300, 200), 0.5, np.float32)).probability
        print(c.runtime, c.card.trained, "torch" in sys.modules, "timm" in sys.modules, p)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, check=True)  # fmt: skip
    runtime, trained, torch_loaded, timm_loaded, _ = done.stdout.splitlines()[-1].split()
    assert (runtime, trained, torch_loaded, timm_loaded) == ("onnxruntime", "False", "False",
                                                             "False")  # fmt: skip
    manifests = list(tmp_path.glob("demo-*.json"))
    assert len(manifests) == 1 and len(list(tmp_path.glob("*.onnx"))) == 1


def test_served_classifier_equals_torch(cache, rg3):
    served = load(cache)
    assert served.runtime == "onnxruntime"
    reference = Classifier.demo(architecture=TINY, device="cpu", runtime="torch")
    got, expected = served.predict(rg3), reference.predict(rg3)
    assert abs(got.probability - expected.probability) <= 1e-5
    assert np.abs(got.heatmap - expected.heatmap).max() <= 1e-3
    with pytest.raises(RuntimeError, match="without PyTorch"):
        _ = served.model


def test_prepared_once_then_reused(cache):
    # Inodes, not mtimes: a load marks its files used by their mtime (dicomnode.model.cache);
    # writing them again (temporary file + rename) would give new inodes.
    stamps = {p: p.stat().st_ino for p in cache.iterdir()}
    load(cache)
    assert {p: p.stat().st_ino for p in cache.iterdir()} == stamps


def test_a_graph_that_does_not_reproduce_torch_is_refused(cache, tmp_path):
    (mine,) = cache.glob("*.onnx")
    other = tmp_path / "other"
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime", cache_dir=other,
                    seed=7)  # fmt: skip
    mine.write_bytes(next(other.glob("*.onnx")).read_bytes())
    with pytest.raises(RuntimeCheckFailed, match="does not reproduce PyTorch"):
        load(cache)
    # auto: the graph is measured and refused → the node still serves, in PyTorch
    fallback = load(cache, runtime="auto")
    assert fallback.runtime == "auto (torch)"
    refused = {c["variant"] for c in fallback.selection["candidates"] if not c["passed"]}
    assert {"onnxruntime", "onnxruntime-spinning"} <= refused


def test_a_damaged_export_is_prepared_again(cache, rg3):
    (cached,) = cache.glob("*.onnx")
    cached.write_bytes(b"not an onnx graph")
    served = load(cache)
    assert cached.stat().st_size > 1000
    expected = Classifier.demo(architecture=TINY, device="cpu", runtime="torch").predict(rg3)
    assert abs(served.predict(rg3).probability - expected.probability) <= 1e-5


def test_a_damaged_manifest_or_reference_is_prepared_again(cache):
    (manifest,) = cache.glob("*.json")
    (reference,) = cache.glob("*.npz")
    reference.write_bytes(b"garbage")
    assert load(cache).runtime == "onnxruntime"
    manifest.write_text("{")
    assert load(cache).runtime == "onnxruntime"
    assert json.loads(manifest.read_text())["format"] == MANIFEST_FORMAT


def test_package_served_and_its_errors_reported(tmp_path, rg3):
    package = tmp_path / "pkg"
    card = tiny_package(package, seed=3)
    served = load(tmp_path / "cache", package=package)
    assert served.card.version == card.version
    expected = Classifier.from_package(package, device="cpu").predict(rg3)
    assert abs(served.predict(rg3).probability - expected.probability) <= 1e-5
    # weights that do not fit the card's architecture: the child's message reaches the caller
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "weights.safetensors").write_bytes((package / "weights.safetensors").read_bytes())
    card_json = json.loads((package / "model.json").read_text())
    card_json["architecture"] = "resnet18"
    (broken / "model.json").write_text(json.dumps(card_json))
    with pytest.raises(ModelPackageError, match="do not fit architecture resnet18"):
        load(tmp_path / "cache", package=broken)


@pytest.mark.parametrize("spinning", [False, True])
def test_spinning_reaches_onnxruntime(cache, spinning):
    served = load_classifier(None, device="cpu", demo_architecture=TINY, runtime="onnxruntime",
                             cache_dir=cache, spinning=spinning)  # fmt: skip
    options = served._backend._session.get_session_options()  # type: ignore[attr-defined]
    entry = options.get_session_config_entry("session.intra_op.allow_spinning")
    assert entry == ("1" if spinning else "0")
