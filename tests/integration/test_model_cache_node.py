"""`dicomnode serve` cleans its model cache: at start (after loading its model) and with each
scheduled retention run, never the model it serves, never other files."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from dicomnode.model.classifier import load_classifier
from dicomnode.model.prepare import prepare
from dicomnode.model.prepared import ModelSource
from tests.support.data import TINY_ARCH
from tests.support.models import tiny_package
from tests.support.nodecfg import write_node_config
from tests.support.peers import wait_until

DAY = 86400.0


def age(paths, days: float) -> None:
    when = time.time() - days * DAY
    for path in paths:
        os.utime(path, (when, when))


def test_node_removes_unused_prepared_models_at_start_and_on_schedule(tmp_path, node_factory):
    config = write_node_config(tmp_path / "node", extra_sections={
        "retention": {"schedule": "* * * * *", "model_cache_days": 30}})  # fmt: skip
    cache = tmp_path / "node" / "var" / "models"
    # The model the node serves (tiny demo) and an earlier package version, prepared for real.
    load_classifier(None, device="cpu", demo_architecture=TINY_ARCH, runtime="onnxruntime",
                    cache_dir=cache)  # fmt: skip
    served = {p.name for p in cache.iterdir()}
    package = tmp_path / "fracture-v1"
    tiny_package(package, seed=1)
    prepare(ModelSource(package), cache)
    earlier = {p.name for p in cache.iterdir()} - served
    assert len(served) == len(earlier) == 3
    saved = Path(shutil.copytree(cache, tmp_path / "saved"))
    (cache / "README.txt").write_text("the admin's note")
    age(cache.iterdir(), 60)

    node = node_factory(config).wait_ready()

    def names() -> set[str]:
        return {p.name for p in cache.iterdir()}

    wait_until(lambda: not names() & earlier, timeout=60, what="earlier model removed at start")
    assert names() == served | {"README.txt"}
    assert all(time.time() - (cache / n).stat().st_mtime < 3600 for n in served)
    log = node.log_path.read_text()
    assert all(n in log for n in earlier) and "model cache: removed" in log

    # Weeks later (as far as the files tell): the served model has not been loaded since the
    # start, an earlier model is back; the next scheduled run (each minute here) removes only it.
    for name in earlier:
        shutil.copy2(saved / name, cache / name)
    age(cache.iterdir(), 60)
    wait_until(lambda: not names() & earlier, timeout=150, interval=1.0,
               what="earlier model removed by the scheduled run")  # fmt: skip
    assert names() == served | {"README.txt"}
    assert all(time.time() - (cache / n).stat().st_mtime < 3600 for n in served)
