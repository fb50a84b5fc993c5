"""Runs you can compare: the run folder's records and plots, the split cache keyed by the data's
content, the epoch counts in best.pt and model.json, the optional loggers, and the node's install
kept free of the training extra."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from PIL import Image

from dicomnode.model.card import read_package
from tests.training.conftest import IMAGE_SIZE, TINY_CONFIG, Synthetic
from training.checkpoint import BEST, LAST, load_checkpoint, save_checkpoint, split_digest
from training.config import ConfigError, TrackingConfig
from training.data import load_split, read_dataset
from training.export import export
from training.plots import PLOT_SIZE
from training.tracking import Trackers, cached_split, dataset_hash, git_commit, new_run_folder
from training.train import RunResult

REPO = Path(__file__).parents[2]


def test_run_folder_records_config_commit_hashes_and_epochs(trained_run: RunResult) -> None:
    out = trained_run.out
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished"
    assert record["epochs_run"] == TINY_CONFIG.epochs == trained_run.last_epoch
    assert record["best_epoch"] == trained_run.best_epoch
    assert record["best_val_auc"] == pytest.approx(trained_run.best_auc)
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert record["git"]["commit"] == (head or "unknown")
    split, _ = load_split(out / "split.json")
    assert record["data"]["split_sha256"] == split_digest(split)
    assert re.fullmatch(r"[0-9a-f]{64}", record["data"]["sha256"])
    assert json.loads((out / "config.json").read_text())["epochs"] == TINY_CONFIG.epochs
    validation = json.loads((out / "validation.json").read_text())
    assert validation["epoch"] == trained_run.best_epoch
    assert validation["auc"] == pytest.approx(trained_run.best_auc, abs=1e-6)
    assert validation["auc_ci95"][0] <= validation["auc"] <= validation["auc_ci95"][1]
    assert record["validation"]["auc"] == validation["auc"]


def test_run_folder_has_history_and_plots(trained_run: RunResult) -> None:
    out = trained_run.out
    with (out / "history.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, TINY_CONFIG.epochs + 1))
    assert {"train_loss", "val_loss", "val_auc"} <= set(rows[0])
    for name in ("roc.png", "pr.png", "reliability.png", "thresholds.png", "curves.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.mode == "RGB", name
            if name != "curves.png":
                assert image.size == PLOT_SIZE
            # Drawn, not blank: a plot has many colours (anti-aliased lines, text).
            assert len(image.getcolors(maxcolors=100_000) or []) > 50, name


def test_best_checkpoint_and_model_card_record_epochs_run_and_best_epoch(
    trained_run: RunResult, tmp_path: Path
) -> None:
    best, last = load_checkpoint(trained_run.out / BEST), load_checkpoint(trained_run.out / LAST)
    assert best["epochs_run"] == last["epochs_run"] == trained_run.last_epoch
    assert best["epoch"] == best["best"]["epoch"] == trained_run.best_epoch
    # A run whose best epoch (3) came before its last (15): the card says both.
    best["epoch"] = best["best"]["epoch"] = best["validation"]["epoch"] = 3
    best.pop("format")
    save_checkpoint(tmp_path / "best.pt", best)
    export(
        checkpoint=tmp_path / "best.pt", out=tmp_path / "pkg", min_image_size=IMAGE_SIZE,
        allow_small_validation=True,  # a tiny test set: the evidence warning is not the point
    )  # fmt: skip
    card, _ = read_package(tmp_path / "pkg")
    training = card.metrics["training"]
    assert (training["epochs_run"], training["best_epoch"]) == (trained_run.last_epoch, 3)


def test_split_cache_is_keyed_by_the_data_content(
    synthetic_folders: Synthetic, tmp_path: Path
) -> None:
    images = read_dataset(synthetic_folders.root)
    digest = dataset_hash(images)
    first, path, notes = cached_split(
        images, cache_dir=tmp_path / "splits", data_sha256=digest, config=TINY_CONFIG
    )
    assert notes[0].startswith("wrote split file") and path.parent == tmp_path / "splits"
    # The same content elsewhere (a copy) has the same hash and reuses the cached split.
    copy = tmp_path / "copy"
    shutil.copytree(synthetic_folders.root, copy)
    again = read_dataset(copy)
    assert dataset_hash(again) == digest
    second, same_path, notes = cached_split(
        again, cache_dir=tmp_path / "splits", data_sha256=digest, config=TINY_CONFIG
    )
    assert (second, same_path) == (first, path) and notes[0].startswith("reusing split file")
    # Other content (one image relabelled) is another data set: another split file.
    moved = next((copy / "fracture").glob("*.png"))
    moved.rename(copy / "normal" / moved.name)
    changed = read_dataset(copy)
    assert dataset_hash(changed) != digest
    _, other_path, notes = cached_split(
        changed,
        cache_dir=tmp_path / "splits",
        data_sha256=dataset_hash(changed),
        config=TINY_CONFIG,
    )
    assert other_path != path and notes[0].startswith("wrote split file")


def test_run_folder_names_and_git_outside_a_checkout(tmp_path: Path) -> None:
    import datetime as dt

    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    first = new_run_folder(tmp_path, "b4 / site A", now=now)
    assert first.name == "20260102-030405-b4-site-A"
    first.mkdir()
    assert new_run_folder(tmp_path, "b4 / site A", now=now).name.endswith("-site-A-2")
    assert git_commit(tmp_path) == {"commit": "unknown", "dirty": None}


def test_mlflow_is_optional_and_refused_clearly_when_missing(tmp_path: Path) -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("mlflow is installed here")
    config = TINY_CONFIG.__class__(tracking=TrackingConfig(mlflow=str(tmp_path / "ml")))
    with pytest.raises(ConfigError, match="mlflow is not installed"):
        Trackers(config, run_name="x", resumed=False)
    assert not (tmp_path / "ml").exists()


def test_tensorboard_logs_every_epoch_offline(tmp_path: Path, synthetic_folders: Synthetic) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TINY_CONFIG.__class__(tracking=TrackingConfig(tensorboard=str(tmp_path / "tb")))
    trackers = Trackers(config, run_name="run-a", resumed=False)
    for epoch in (1, 2, 3):
        trackers.epoch({"epoch": epoch, "train_loss": 1.0 / epoch, "val_auc": 0.5 + epoch / 10})
    trackers.finish(out=tmp_path, summary={"epochs_run": 3, "best_epoch": 3})
    events = EventAccumulator(str(tmp_path / "tb" / "run-a"))
    events.Reload()
    assert [e.step for e in events.Scalars("val_auc")] == [1, 2, 3]
    assert events.Scalars("train_loss")[-1].value == pytest.approx(1 / 3)


def test_the_nodes_install_does_not_grow() -> None:
    """The training extra holds the ML tooling; the node neither depends on nor imports it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # scipy is not in the list: the node uses it too (imaging/regions: the suspected regions'
    # connected components, issue 21).
    training_only = ("scikit-learn", "matplotlib", "tensorboard")
    for name in training_only:
        assert not any(d.startswith(name) for d in project["dependencies"]), name
        assert any(d.startswith(name) for d in project["optional-dependencies"]["training"])
    assert not any(
        d.startswith("mlflow") for deps in project["optional-dependencies"].values() for d in deps
    )
    code = (
        "import sys, dicomnode.node, dicomnode.cli, dicomnode.model.classifier as c\n"
        "c.create_model('test_efficientnet')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'sklearn', 'matplotlib', 'tensorboard', 'training'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_resume_rewrites_the_run_record(tmp_path: Path, synthetic_folders: Synthetic) -> None:
    """A paused run says so; the resumed one finishes with the total epoch count."""
    from training.train import run

    small = TINY_CONFIG.__class__(**{**TINY_CONFIG.__dict__, "epochs": 2})
    out = tmp_path / "run"
    run(data=synthetic_folders.root, out=out, config=small, stop_after_epochs=1)
    record = json.loads((out / "run.json").read_text())
    assert record["status"].startswith("paused") and record["epochs_run"] == 1
    run(data=synthetic_folders.root, out=out, config=small, resume=out / LAST)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["epochs_run"] == 2
    assert load_checkpoint(out / BEST)["epochs_run"] == 2
    assert torch.load(out / LAST, weights_only=True)["epochs_run"] == 2


def test_progress_bars_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """tqdm draws on stderr when it is a terminal; a batch job's stderr stays empty."""
    import io

    from training.epochs import progress

    class Terminal(io.StringIO):
        def __init__(self, tty: bool) -> None:
            super().__init__()
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    for tty in (True, False):
        stream = Terminal(tty)
        monkeypatch.setattr(sys, "stderr", stream)
        assert list(progress(range(5), total=5, desc="epoch 1/2")) == list(range(5))
        assert ("epoch 1/2" in stream.getvalue()) is tty
        assert tty or stream.getvalue() == ""


def test_a_split_file_left_in_the_data_folder_by_an_older_version_is_reused(
    synthetic_folders: Synthetic, tmp_path: Path
) -> None:
    """Runs made before the split moved to the run folder keep their test images."""
    from training.data import make_split, save_split
    from training.train import _prepare_data

    data = tmp_path / "data"
    shutil.copytree(synthetic_folders.root, data)
    images = read_dataset(data)
    old = make_split(images, val_fraction=0.3, test_fraction=0.3, seed=99, group_by="")
    save_split(old, data / "split.json", images)
    out = tmp_path / "run"
    out.mkdir()
    _, split, _ = _prepare_data(
        data=data, out=out, config=TINY_CONFIG, split_file=None, split_cache=tmp_path / "cache"
    )
    assert split == old and load_split(out / "split.json")[0] == old
    assert not (tmp_path / "cache").exists()
