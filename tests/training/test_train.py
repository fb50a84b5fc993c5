"""Training on the synthetic set: it learns, checkpoints, resumes the same run, runs as a CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dicomnode.model.classifier import Classifier
from tests.training.conftest import TINY_CONFIG, Synthetic
from training.checkpoint import BEST, LAST, METRICS_LOG, load_checkpoint
from training.config import ConfigError, TrainConfig
from training.model import build_model, cosine_with_warmup, model_info
from training.synthetic import write_dataset
from training.train import EarlyStopping, RunResult, run

REPO = Path(__file__).parents[2]


def _log(out: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]


def test_tiny_model_learns_the_synthetic_fractures(trained_run: RunResult) -> None:
    assert trained_run.best_auc > 0.9
    log = _log(trained_run.out)
    assert [r["epoch"] for r in log] == list(range(1, TINY_CONFIG.epochs + 1))
    assert max(r["val_auc"] for r in log) == pytest.approx(trained_run.best_auc, abs=1e-6)
    assert log[-1]["train_loss"] < log[0]["train_loss"]
    assert set(log[0]) >= {"train_loss", "val_loss", "val_auc", "lr", "best_auc", "seconds"}


def test_checkpoints_hold_everything_to_resume_and_export(trained_run: RunResult) -> None:
    last, best = load_checkpoint(trained_run.out / LAST), load_checkpoint(trained_run.out / BEST)
    assert last["epoch"] == TINY_CONFIG.epochs
    assert best["epoch"] == best["best"]["epoch"] == trained_run.best_epoch
    for key in ("model", "optimizer", "scheduler", "rng", "config", "validation", "data"):
        assert key in last
    assert best["validation"]["logits"].shape == (len(best["validation"]["labels"]), 2)
    assert best["model_info"]["input_size"] == TINY_CONFIG.image_size
    assert (trained_run.out / "split.json").is_file() and (
        trained_run.out / "config.json"
    ).is_file()


def test_resume_continues_the_same_run(
    tmp_path: Path, synthetic_folders: Synthetic, trained_run: RunResult
) -> None:
    """Stop after 2 epochs, resume for 2 more: the same numbers as the uninterrupted run."""
    out = tmp_path / "run"
    run(data=synthetic_folders.root, out=out, config=TINY_CONFIG, stop_after_epochs=2)
    assert [r["epoch"] for r in _log(out)] == [1, 2]
    assert load_checkpoint(out / LAST)["epoch"] == 2
    result = run(
        data=synthetic_folders.root,
        out=out,
        config=TrainConfig(),  # ignored: the checkpoint's configuration is used
        resume=out / LAST,
        stop_after_epochs=2,
    )
    assert result.last_epoch == 4
    resumed, reference = _log(out), _log(trained_run.out)[:4]
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]  # the log was appended to
    for mine, theirs in zip(resumed, reference, strict=True):
        for key in ("train_loss", "val_loss", "val_auc", "lr"):
            assert mine[key] == pytest.approx(theirs[key], abs=1e-5), (mine["epoch"], key)


def test_cosine_schedule_with_warmup() -> None:
    factor = cosine_with_warmup(total_steps=100, warmup_steps=10, min_ratio=0.01)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.01 + 0.99 * 0.5)
    assert factor(100) == pytest.approx(0.01) and factor(10) == pytest.approx(1.0)


def test_early_stopping_counts_epochs_without_a_higher_auc() -> None:
    stopping = EarlyStopping(patience=2)
    improved = [stopping.update(e, auc) for e, auc in enumerate([0.5, 0.6, 0.6], 1)]
    assert improved == [True, True, False]  # an equal AUC is not an improvement
    assert not stopping.stop and stopping.best_epoch == 2
    assert not stopping.update(4, 0.55) and stopping.stop
    assert stopping.to_json() == {"auc": 0.6, "epoch": 2, "stale_epochs": 2}


def test_default_input_size_matches_the_nodes_demo_for_efficientnet_b4() -> None:
    """The real architecture: training's default input size and normalisation are the node's."""
    config = TrainConfig()  # efficientnet_b4, image_size from timm
    model, init = build_model(config)
    info = model_info(model, config)
    demo = Classifier.demo(architecture="efficientnet_b4", device="cpu").card
    assert init == "random"
    assert (info.input_size, info.mean, info.std) == (demo.input_size, demo.mean, demo.std)
    assert sum(p.numel() for p in model.parameters()) > 17_000_000


def test_cli_fracatlas_layout_on_a_read_only_data_folder(tmp_path: Path) -> None:
    """The CLI trains from a read-only data folder, writes nothing into it, and keeps the split
    (cached under the data's content hash) with the run, in a timestamped run folder; with
    `--tensorboard` it also logs there. No progress bars: stderr is not a terminal."""
    data = tmp_path / "fracatlas"
    write_dataset(data, layout="fracatlas", n=48, size=48, seed=2)
    config = tmp_path / "c.toml"
    config.write_text(
        f'architecture = "{TINY_CONFIG.architecture}"\nimage_size = 48\nepochs = 2\n'
        'batch_size = 8\nnum_workers = 0\nimbalance = "sampler"\n'
    )
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    _read_only(data)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "training.train",
                "--data",
                str(data),
                "--runs-dir",
                str(tmp_path / "runs"),
                "--name",
                "atlas tiny",
                "--config",
                str(config),
                "--tensorboard",
                str(tmp_path / "tb"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
            cwd=REPO,
            timeout=300,
        )
    finally:
        _read_only(data, writable=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before
    assert "fracatlas layout" in result.stdout
    (run_dir,) = (tmp_path / "runs").glob("*-atlas-tiny")
    assert len(_log(run_dir)) == 2
    split = json.loads((run_dir / "split.json").read_text())
    assert "no patient ids" in split["note"]
    (cached,) = (tmp_path / "runs" / "splits").glob("*.json")
    assert json.loads(cached.read_text())["test"] == split["test"]
    state = load_checkpoint(run_dir / LAST)
    assert state["init"] == "random" and state["config"]["imbalance"] == "sampler"
    # --tensorboard: one TensorBoard run per run folder, in the given directory.
    assert list((tmp_path / "tb" / run_dir.name).glob("events.out.tfevents.*"))
    assert state["config"]["tracking"]["tensorboard"] == str((tmp_path / "tb").resolve())
    assert not result.stderr.strip() or "epoch" not in result.stderr  # no bars off a terminal


def _read_only(root: Path, *, writable: bool = False) -> None:
    for path in [root, *root.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755 if writable else 0o555)
        else:
            path.chmod(0o644 if writable else 0o444)


def test_cli_rejects_config_with_resume(tmp_path: Path) -> None:
    from training.train import main

    assert (
        main(
            [
                "--data",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
                "--config",
                "x.toml",
                "--resume",
                "last.pt",
            ]
        )
        == 2
    )
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2


def test_checkpoint_loading_rejects_other_files(tmp_path: Path) -> None:
    torch.save({"something": 1}, tmp_path / "x.pt")
    with pytest.raises(ConfigError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
