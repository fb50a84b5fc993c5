"""The model cache clean-up on real prepared models: loads mark their files used; files unused
for `model_cache_days` go (a manifest with the files it names), never the served model's, never
anything else in the directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dicomnode.model.cache import clean_model_cache, mark_used
from dicomnode.model.classifier import Classifier, load_classifier
from dicomnode.model.prepare import prepare
from dicomnode.model.prepared import ModelSource
from tests.support import data
from tests.support.models import tiny_package

TINY = data.TINY_ARCH
DAY = 86400.0


def load(cache: Path) -> Classifier:
    """The tiny demo as the node loads it (ONNX Runtime, prepared in a child process)."""
    return load_classifier(None, device="cpu", demo_architecture=TINY, runtime="onnxruntime",
                           cache_dir=cache)  # fmt: skip


def age(paths, days: float) -> None:
    when = time.time() - days * DAY
    for path in paths:
        os.utime(path, (when, when), follow_symlinks=False)


def names(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir()}


def days_since_used(path: Path) -> float:
    return (time.time() - path.lstat().st_mtime) / DAY


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, set[str], set[str]]:
    """A cache with the tiny demo (the model served) and an earlier package version, both
    prepared by the real code; returns (cache, the demo's files, the package's files)."""
    cache = tmp_path_factory.mktemp("models")
    before = names(cache)
    load(cache)
    demo = names(cache) - before
    package = tmp_path_factory.mktemp("package") / "fracture-v1"
    tiny_package(package, seed=1)
    prepare(ModelSource(package), cache)  # as the child process does
    old = names(cache) - demo
    return cache, demo, old


@pytest.fixture
def cache(two_models, tmp_path) -> tuple[Path, set[str], set[str]]:
    source, demo, old = two_models
    return Path(shutil.copytree(source, tmp_path / "models")), demo, old


def test_layout_is_a_manifest_a_graph_and_a_reference_per_model(cache):
    _, demo, old = cache
    for files in (demo, old):
        assert len(files) == 3
        assert {Path(n).suffix for n in files} == {".json", ".onnx", ".npz"}
    assert any(n.startswith("demo-") for n in demo) and any(n.startswith("package-") for n in old)


def test_a_load_marks_the_files_it_is_served_from(cache):
    folder, demo, old = cache
    age(folder.iterdir(), 60)
    classifier = load(folder)
    assert {p.name for p in classifier.cache_files} == demo
    assert all(days_since_used(folder / n) < 0.01 for n in demo)
    assert all(days_since_used(folder / n) > 59 for n in old)  # other models: untouched


def test_the_in_process_torch_path_marks_the_graph_it_reuses(cache):
    # `classify` with PyTorch loaded exports to (or reuses) the same `<arch>-<key>.onnx`.
    folder, demo, old = cache
    age(folder.iterdir(), 60)
    Classifier.demo(architecture=TINY, device="cpu", runtime="onnxruntime", cache_dir=folder)
    assert names(folder) == demo | old  # reused, not exported again
    (graph,) = (n for n in demo if n.endswith(".onnx"))
    assert days_since_used(folder / graph) < 0.01
    assert all(days_since_used(folder / n) > 59 for n in demo | old if n != graph)


def test_unused_model_goes_with_its_files_the_served_one_stays_however_old(cache):
    folder, demo, old = cache
    classifier = load(folder)
    age(folder.iterdir(), 60)
    report = clean_model_cache(folder, days=30, keep=classifier.cache_files,
                               now=datetime.now(UTC))  # fmt: skip
    assert {f.name for f in report.removed} == old
    assert report.removed[0].kind == "manifest"  # before the files it names
    assert report.bytes == sum(f.size for f in report.removed) > 0
    assert names(folder) == demo and not report.errors
    load(folder)  # still served from the cache as it is


def test_without_keep_the_old_served_model_would_go(cache):
    folder, demo, old = cache
    age(folder.iterdir(), 60)
    report = clean_model_cache(folder, days=30, keep=(), now=datetime.now(UTC))
    assert {f.name for f in report.removed} == demo | old
    assert names(folder) == set()


def test_recent_entries_stay(cache):
    folder, demo, old = cache
    age((folder / n for n in old), 29)
    age((folder / n for n in demo), 31)
    report = clean_model_cache(folder, days=30, keep=(), now=datetime.now(UTC))
    assert {f.name for f in report.removed} == demo
    assert names(folder) == old


def test_zero_days_never_cleans(cache):
    folder, demo, old = cache
    age(folder.iterdir(), 4000)
    report = clean_model_cache(folder, days=0, keep=(), now=datetime.now(UTC))
    assert report.removed == [] and names(folder) == demo | old


def test_after_a_torch_upgrade_the_old_manifest_goes_the_shared_graph_stays(cache):
    # The manifest name carries the torch/timm versions; the graph and reference names do not,
    # so the manifest of the previous torch names the very files the current one serves.
    folder, demo, old = cache
    (current,) = (n for n in demo if n.endswith(".json"))
    versions = current[current.index("-torch") :]
    earlier = folder / current.replace(versions, "-torch2.0.0-timm0.9.0.json")
    shutil.copyfile(folder / current, earlier)
    # A manifest used lately keeps the files it names, however old they are themselves.
    age([earlier, *(folder / n for n in old | demo if n != current)], 60)
    report = clean_model_cache(folder, days=30, keep=(), now=datetime.now(UTC))
    assert {f.name for f in report.removed} == {earlier.name} | old
    assert names(folder) == demo


def test_only_our_names_go_never_other_files_nor_symlinks(cache, tmp_path):
    folder, demo, old = cache
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / f"{TINY}-{'0' * 32}.onnx"
    target.write_bytes(b"not ours")
    (folder / f"{TINY}-{'1' * 32}.onnx").symlink_to(target)
    (folder / "demo-linked-seed0-torch1-timm1.json").symlink_to(outside)
    others = ["notes.txt", "model.onnx", "weights.safetensors", "config.json",
              f"{TINY}-{'a' * 31}.onnx", f"x-{'a' * 32}.onnx.bak", ".cache.part"]  # fmt: skip
    for name in others:
        (folder / name).write_bytes(b"admin's")
    (folder / "sub").mkdir()
    (folder / "sub" / f"{TINY}-{'2' * 32}.onnx").write_bytes(b"in a subfolder")
    (folder / ".prepare-killed.part").write_bytes(b"partial")
    (folder / ".export-fresh.part").write_bytes(b"being written")
    age([p for p in folder.iterdir() if p.name != ".export-fresh.part"], 60)
    age([target, outside, folder / "sub" / f"{TINY}-{'2' * 32}.onnx"], 60)
    report = clean_model_cache(folder, days=30, keep=(), now=datetime.now(UTC))
    assert {f.name for f in report.removed} == demo | old | {".prepare-killed.part"}
    assert names(folder) == {*others, "sub", ".export-fresh.part", target.name.replace(
        "0" * 32, "1" * 32), "demo-linked-seed0-torch1-timm1.json"}  # fmt: skip
    assert target.read_bytes() == b"not ours" and (folder / "sub").is_dir()


def test_missing_or_unlistable_cache_does_not_crash(tmp_path):
    now = datetime.now(UTC)
    assert clean_model_cache(tmp_path / "none", days=30, keep=(), now=now).removed == []
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    report = clean_model_cache(not_a_dir, days=30, keep=(), now=now)
    assert report.removed == [] and report.errors and not_a_dir.exists()
    mark_used([tmp_path / "gone.onnx"])  # a vanished file is not an error either


def _unshare_works() -> bool:
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                              capture_output=True, timeout=30)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def test_read_only_cache_still_loads_and_is_left_as_it_is(cache):
    """A read-only mount (EROFS: nothing can be touched or removed) in a private mount
    namespace; the load must not fail on marking its files, the clean-up must not raise."""
    if not _unshare_works():
        pytest.skip("unshare (user + mount namespace) is not permitted here")
    folder, demo, old = cache
    age(folder.iterdir(), 60)
    script = textwrap.dedent(f"""
        import json
        from datetime import UTC, datetime
        from pathlib import Path
        from dicomnode.model.classifier import load_classifier
        from dicomnode.model.cache import clean_model_cache
        folder = Path({str(folder)!r})
        c = load_classifier(None, device="cpu", demo_architecture={TINY!r},
                            runtime="onnxruntime", cache_dir=folder)
        r = clean_model_cache(folder, days=30, keep=c.cache_files, now=datetime.now(UTC))
        print(json.dumps({{"runtime": c.runtime, "removed": [f.name for f in r.removed],
                          "errors": r.errors}}))
    """)
    mount = f'mount --bind -o ro "{folder}" "{folder}" && exec "{sys.executable}" -c "$0"'
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", mount,
                           script], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["runtime"] == "onnxruntime" and result["removed"] == []
    assert sorted(e.split(":")[0] for e in result["errors"]) == sorted(old)
    assert names(folder) == demo | old
    assert all(days_since_used(folder / n) > 59 for n in demo | old)  # nothing could be marked
