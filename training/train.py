"""Train the fracture classifier.

    python -m training.train --data DIR [--out RUN | --runs-dir runs --name NAME]
        [--config FILE.toml] [--resume RUN/last.pt] [--pretrained | --init-weights FILE]
        [--tensorboard DIR] [--mlflow DIR]

Reads the data (FracAtlas or class-folder layout, see `training.data`), reuses or makes the
split (cached next to the runs under the data set's content hash, see `training.tracking`; the
data folder is only read), then trains a timm network with AdamW and a cosine schedule with
warm-up, class-weighted loss (or a balanced sampler) and X-ray augmentation, validating each
epoch and stopping early when the validation AUC stops improving. Mixed precision and
channels-last are used on CUDA only. Progress bars (tqdm) show on a terminal only.

Written to the run folder (`--out`, default `runs/<UTC timestamp>-<name>/`): `last.pt` every
epoch, `best.pt` when the validation AUC improves (both with optimizer, scheduler, epoch,
early-stopping and RNG state, and the validation logits that `training.export` uses to fit the
thresholds and temperature), `metrics.jsonl`, `history.csv` and `curves.png` (per epoch),
`config.json`, `split.json`, `run.json` (git commit, data and split hashes, epochs run, best
epoch) and the best epoch's validation metrics and plots.

`--resume RUN/last.pt` continues the same run with the configuration stored in the checkpoint:
on CPU with the same seed it gives the same numbers as an uninterrupted run, because each
epoch's order and augmentations are seeded from (seed, epoch) and the global RNG is restored.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import timm
import torch
from tqdm.auto import tqdm

import dicomnode
from training.checkpoint import (
    BEST,
    LAST,
    METRICS_LOG,
    append_metrics,
    load_checkpoint,
    read_metrics,
    rewind_metrics,
    save_checkpoint,
    split_digest,
)
from training.config import ConfigError, TrainConfig, config_from_dict, load_config
from training.data import (
    DataError,
    LabelledImages,
    RadiographDataset,
    Split,
    read_dataset,
    select,
)
from training.epochs import (
    EarlyStopping,
    class_weights,
    log,
    make_loaders,
    predict_logits,
    show_progress,
    train_one_epoch,
)
from training.metrics import roc_auc
from training.model import (
    Runtime,
    build_model,
    cosine_with_warmup,
    make_optimizer,
    model_info,
)
from training.profile import training_profile
from training.tracking import (
    CONFIG_FILE,
    SPLIT_FILE,
    Trackers,
    cached_split,
    dataset_hash,
    finish_run,
    new_run_folder,
    split_at,
    write_history,
    write_json,
    write_run_record,
)

__all__ = ["BEST", "LAST", "METRICS_LOG", "EarlyStopping", "RunResult", "main", "run"]


def _prepare_data(
    *,
    data: Path,
    out: Path,
    config: TrainConfig,
    split_file: Path | None,
    split_cache: Path,
) -> tuple[LabelledImages, Split, str]:
    """Read the data, reuse or make the split, and record split and config in the run folder.

    The data folder is only read (it may be read-only or shared): the split lives in the run
    folder, taken from `split_file` if given, else from the cache keyed by the data's content.
    Returns the images, the split and the data set's content hash.
    """
    dc = config.data
    images = read_dataset(data, positive_class=dc.positive_class, group_by=dc.group_by)
    data_sha256 = dataset_hash(images)
    legacy = data / SPLIT_FILE
    if split_file is None and legacy.is_file():
        # Written there by earlier versions: keep testing on the same images (read only).
        log(f"found {legacy} (written by an earlier version); reusing it")
        split_file = legacy
    if split_file is not None:
        split, notes = split_at(images, split_file, config=config)
        source = split_file
    else:
        split, source, notes = cached_split(
            images, cache_dir=split_cache, data_sha256=data_sha256, config=config
        )
    if source.resolve() != (out / SPLIT_FILE).resolve():
        shutil.copyfile(source, out / SPLIT_FILE)
    write_json(out / CONFIG_FILE, config.to_dict())
    log(images.describe())
    for note in notes:
        log(note)
    return images, split, data_sha256


@dataclass(frozen=True)
class RunResult:
    best_auc: float
    best_epoch: int
    #: Epochs run in total (across resumes): the last finished epoch.
    last_epoch: int
    stopped_early: bool
    out: Path


def run(
    *,
    data: Path,
    out: Path,
    config: TrainConfig,
    resume: Path | None = None,
    split_file: Path | None = None,
    split_cache: Path | None = None,
    stop_after_epochs: int | None = None,
    device: str | None = None,
) -> RunResult:
    """Train (or continue) one run in the run folder `out`; see the module docstring.

    When resuming, `config` is ignored: the checkpoint's configuration is used (with `device`
    overridden if given, e.g. to continue on another machine). The split comes from
    `split_file` if given, else from `split_cache` (default: `splits/` next to `out`).
    """
    checkpoint = load_checkpoint(resume) if resume else None
    if checkpoint is not None:
        config = config_from_dict(checkpoint["config"])
        split_file = split_file or Path(checkpoint["data"]["split_file"])
    if device:
        config = replace(config, device=device)
    out.mkdir(parents=True, exist_ok=True)
    images, split, data_sha256 = _prepare_data(
        data=data,
        out=out,
        config=config,
        split_file=split_file,
        split_cache=split_cache or out.resolve().parent / "splits",
    )
    if checkpoint is not None and checkpoint["data"]["split_sha256"] != split_digest(split):
        raise DataError(f"split file {split_file} is not the one this run was trained with")

    runtime = Runtime.for_config(config)
    # On resume the weights come from the checkpoint: no pretrained download attempt.
    initial = (
        config if checkpoint is None else replace(config, pretrained=False, pretrained_file="")
    )
    model, init = build_model(initial, log=log)
    info = model_info(model, config)
    runtime.prepare(model)
    samples = {name: select(images, split, name) for name in ("train", "val")}
    train_set = RadiographDataset(
        images.root,
        samples["train"],
        input_size=info.input_size,
        mean=info.mean,
        std=info.std,
        augment=config.augment,
        seed=config.seed,
    )
    val_set = RadiographDataset(
        images.root, samples["val"], input_size=info.input_size, mean=info.mean, std=info.std
    )
    weight = class_weights(samples["train"]) if config.imbalance == "loss" else None
    criterion = torch.nn.CrossEntropyLoss(
        weight=None if weight is None else weight.to(runtime.device),
        label_smoothing=config.label_smoothing,
    )
    optimizer = make_optimizer(model, config)
    steps = len(make_loaders(train_set, val_set, config=config, runtime=runtime, epoch=1)[0])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        cosine_with_warmup(
            total_steps=config.epochs * steps,
            warmup_steps=max(1, round(config.warmup_epochs * steps)),
            min_ratio=config.min_lr_ratio,
        ),
    )
    scaler = runtime.grad_scaler()
    state = EarlyStopping(config.patience)
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"]:
            scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if runtime.device.type == "cuda" and checkpoint["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        best = checkpoint["best"]
        state = EarlyStopping(
            config.patience,
            epoch=int(checkpoint["epoch"]),
            best_auc=float(best["auc"]),
            best_epoch=int(best["epoch"]),
            stale=int(best["stale_epochs"]),
        )
        init = str(checkpoint["init"])
        rewind_metrics(out / METRICS_LOG, state.epoch)
        log(
            f"resuming after epoch {state.epoch} (best AUC {state.best_auc:.4f} at epoch "
            f"{state.best_epoch})"
        )
    else:
        (out / METRICS_LOG).unlink(missing_ok=True)
    log(
        f"model {info.architecture} ({init} init), input {info.input_size} px, device "
        f"{runtime.device}, {len(train_set)} train / {len(val_set)} val images"
    )

    fixed = {
        "config": config.to_dict(),
        "model_info": info.to_json(),
        "init": init,
        "data": {
            "description": images.describe(),
            "layout": images.layout,
            "split_file": str((out / SPLIT_FILE).resolve()),
            "split_sha256": split_digest(split),
            "data_sha256": data_sha256,
            "split_seed": split.seed,
            "group_by": split.group_by,
            "counts": {
                name: {"images": len(s), "fracture": sum(x.label for x in s)}
                for name, s in samples.items()
            },
            # Body parts and smallest image of the training split, for the model card.
            "profile": training_profile(images.root, samples["train"]),
        },
        "versions": {
            "dicomnode": dicomnode.__version__,
            "torch": str(torch.__version__),
            "timm": str(timm.__version__),
        },
    }
    trackers = Trackers(config, run_name=out.name, resumed=checkpoint is not None)
    write_run_record(out, fixed, state=state, status="running")
    epochs_bar = tqdm(
        total=config.epochs,
        initial=state.epoch,
        desc="epochs",
        unit="epoch",
        dynamic_ncols=True,
        disable=not show_progress(),
    )
    ran = 0
    try:
        while state.epoch < config.epochs and not state.stop:
            if stop_after_epochs is not None and ran >= stop_after_epochs:
                log(f"stopping after {ran} epoch(s) as asked; resume with --resume {out / LAST}")
                break
            epoch = state.epoch + 1
            ran += 1
            started = time.monotonic()
            train_loader, val_loader = make_loaders(
                train_set, val_set, config=config, runtime=runtime, epoch=epoch
            )
            train_loss = train_one_epoch(
                model,
                train_loader,
                optimizer=optimizer,
                scheduler=scheduler,
                criterion=criterion,
                scaler=scaler,
                runtime=runtime,
                desc=f"epoch {epoch}/{config.epochs}",
            )
            logits, labels = predict_logits(model, val_loader, runtime)
            logits_t, labels_t = torch.from_numpy(logits), torch.from_numpy(labels)
            val_loss = float(torch.nn.functional.cross_entropy(logits_t, labels_t))
            val_auc = roc_auc(labels, torch.softmax(logits_t, dim=1)[:, 1].numpy())
            improved = state.update(epoch, val_auc)
            save_checkpoint(
                out / LAST,
                {
                    **fixed,
                    "epoch": state.epoch,
                    # best.pt is a copy of this; the run's end rewrites its count (see _finish).
                    "epochs_run": state.epoch,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                    "rng": {
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all()
                        if runtime.device.type == "cuda"
                        else [],
                    },
                    "best": state.to_json(),
                    "validation": {
                        "epoch": state.epoch,
                        "auc": val_auc,
                        "logits": logits_t,
                        "labels": labels_t,
                    },
                },
            )
            if improved:
                shutil.copyfile(out / LAST, out / BEST)
            seconds = time.monotonic() - started
            record = {
                "epoch": state.epoch,
                "train_loss": round(train_loss, 6),
                "val_loss": round(val_loss, 6),
                "val_auc": round(val_auc, 6),
                "lr": optimizer.param_groups[0]["lr"],
                "best_auc": round(state.best_auc, 6),
                "best_epoch": state.best_epoch,
                "seconds": round(seconds, 2),
            }
            append_metrics(out / METRICS_LOG, record)
            trackers.epoch(record)
            history = read_metrics(out / METRICS_LOG)
            write_history(out, history, best_epoch=state.best_epoch, plot=False)
            epochs_bar.update(1)
            epochs_bar.set_postfix(val_auc=f"{val_auc:.4f}", best=f"{state.best_auc:.4f}")
            log(
                f"epoch {state.epoch}/{config.epochs}: train loss {train_loss:.4f}, val loss "
                f"{val_loss:.4f}, val AUC {val_auc:.4f}{' (best)' if improved else ''}, "
                f"{seconds:.1f} s"
            )
    except BaseException:
        trackers.close()
        raise
    finally:
        epochs_bar.close()
    if state.stop:
        log(f"early stopping: no better validation AUC for {config.patience} epochs")
    complete = state.stop or state.epoch >= config.epochs
    finish_run(out, fixed, state=state, trackers=trackers, complete=complete)
    log(
        f"best validation AUC {state.best_auc:.4f} at epoch {state.best_epoch}; next: "
        f"python -m training.export --checkpoint {out / BEST} --out PACKAGE_DIR"
    )
    return RunResult(state.best_auc, state.best_epoch, state.epoch, state.stop, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data", required=True, type=Path, help="data folder (either layout)")
    parser.add_argument(
        "--out",
        type=Path,
        help="run folder (default RUNS_DIR/<UTC timestamp>-<name>; with --resume, its folder)",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="default: runs")
    parser.add_argument("--name", help="run name (default: the config file's or data's name)")
    parser.add_argument("--config", type=Path, help="TOML file overriding the defaults")
    parser.add_argument("--resume", type=Path, help="checkpoint to continue (e.g. RUN/last.pt)")
    parser.add_argument(
        "--split-file",
        type=Path,
        help="split file to reuse or create (default: the split cached for this data content)",
    )
    parser.add_argument(
        "--split-cache", type=Path, help="split cache folder (default: splits/ next to the run)"
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--pretrained",
        action="store_true",
        help="start from timm's ImageNet weights in the local cache (never downloads)",
    )
    weights.add_argument(
        "--init-weights", type=Path, help="start from a state dict file (.safetensors, .pt)"
    )
    parser.add_argument("--tensorboard", type=Path, help="also log to TensorBoard in DIR")
    parser.add_argument("--mlflow", type=Path, help="also log to an MLflow file store in DIR")
    parser.add_argument("--positive-class", help="class folder that means fracture")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--device", help="auto, cpu, cuda, cuda:N (overrides the config)")
    parser.add_argument(
        "--stop-after-epochs",
        type=int,
        help="end this invocation after N epochs (e.g. for time-limited jobs)",
    )
    return parser


def _overrides(args: argparse.Namespace, config: TrainConfig) -> dict[str, Any]:
    """Command-line settings that replace the configuration's."""
    overrides: dict[str, Any] = {}
    if args.pretrained:
        overrides["pretrained"] = True
    if args.init_weights:
        overrides.update(pretrained=False, pretrained_file=str(args.init_weights.resolve()))
    if args.epochs:
        overrides["epochs"] = args.epochs
    if args.positive_class:
        overrides["data"] = replace(config.data, positive_class=args.positive_class)
    tracking = {
        key: str(value.resolve())
        for key, value in (("tensorboard", args.tensorboard), ("mlflow", args.mlflow))
        if value
    }
    if tracking:
        overrides["tracking"] = replace(config.tracking, **tracking)
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.resume and args.config:
            raise ConfigError(
                "--config cannot be combined with --resume: the run's configuration is stored "
                "in the checkpoint"
            )
        config = load_config(args.config)
        overrides = _overrides(args, config)
        if args.resume and overrides:
            raise ConfigError(
                "--pretrained/--init-weights/--epochs/--positive-class/--tensorboard/--mlflow "
                "cannot be combined with --resume"
            )
        out = args.out or (args.resume.parent if args.resume else None)
        if out is None:
            name = args.name or (args.config.stem if args.config else args.data.name)
            out = new_run_folder(args.runs_dir, name)
        log(f"run folder {out}")
        run(
            data=args.data,
            out=out,
            config=replace(config, **overrides),
            resume=args.resume,
            split_file=args.split_file,
            split_cache=args.split_cache,
            stop_after_epochs=args.stop_after_epochs,
            device=args.device,
        )
    except (ConfigError, DataError) as exc:
        print(f"training: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
