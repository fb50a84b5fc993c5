"""Export a training checkpoint as the model package the node loads.

    python -m training.export --checkpoint RUN/best.pt --out PKG [--onnx]

Writes `weights.safetensors` and `model.json` (via `dicomnode.model.card.write_card`, which records
the weights' SHA-256). The temperature and the two operating points are fitted on the
validation logits stored in the checkpoint (see `training.thresholds`). The package is then
loaded with `dicomnode.model.classifier.Classifier.from_package` and checked to reproduce the
checkpoint model's probability on a probe image, within the tolerance the node itself applies
to a runtime (`dicomnode.model.runtime.MAX_PROBABILITY_DELTA`).

The card also states what the model was trained on and how firm its operating points are
(`training.card_claims`): the body parts and smallest image of the training split, and each
operating point's validation sensitivity and specificity with 95 % intervals.

With `--onnx`, `model.onnx` is written too, with outputs `logits` (B, classes) and `features`
(B, C, h, w: the last feature map, from which the class activation map is computed), a dynamic
batch axis and input `input` (B, 3, S, S) as `preprocess.to_model_input` makes it. Its outputs
are compared with PyTorch's on a probe image, the node's seeded radiograph-like check inputs and
the validation images the package carries, with the node's own equivalence check
(`dicomnode.model.equivalence`, the check `runtime = "auto"` applies to every runtime): the same
decisions at both operating points, |Δ P(fracture)| within `MAX_DELTA_P`, and the heatmap's
half-peak region and peak where PyTorch has them; otherwise the export fails and removes the
file. What a user sees is a probability against two thresholds and a heatmap, so those are what
is compared. Raw float32 outputs are not gated on an absolute figure: summation order changes
with the thread count and the CPU's kernels (the same export was measured at 4.8e-07 on one
machine and 1.07e-04 on another), and random-noise inputs are not used (a B4 trained from
scratch gave logits of 1e4 on them that PyTorch did not reproduce between batch sizes). Every
figure is reported (`metrics.onnx_check` in the card, and on the command line). Inputs on which
PyTorch fp32 itself differs from double precision are left out and counted
(`equivalence.reproducible`).

A package whose validation set is too small for its claims is refused (fewer than
`MIN_POSITIVES` fractures, or a 95 % CI of the AUC wider than `MAX_AUC_CI_WIDTH`: see
`dicomnode.model.evidence` and docs/model-card.md); `--allow-small-validation` exports it
anyway and records the warning in the card's limitations. The ROC, PR and reliability plots of
the validation set are drawn into the package (`plots/`), where the node's About page shows them.

With `--calibration-data DATA` (the training data folder), up to `--calibration-images` of the
run's validation images go into `validation/` as pixel-only PNGs, for the node's int8
calibration and runtime check (`training.calibration`, which says what is and is not carried).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from dicomnode.imaging import preprocess
from dicomnode.model.card import (
    CARD_FILE,
    DEFAULT_MIN_IMAGE_SIZE,
    PLOTS_DIR,
    WEIGHTS_FILE,
    ModelCard,
    sha256_file,
    write_card,
)
from dicomnode.model.classifier import Classifier, create_model, outcome_for
from dicomnode.model.equivalence import (
    MAX_DELTA_P,
    MIN_HALF_PEAK_IOU,
    Equivalence,
    compare_outputs,
    reproducible,
)
from dicomnode.model.evidence import assess_metrics
from dicomnode.model.runtime import MAX_PROBABILITY_DELTA, check_inputs
from dicomnode.model.select import VALIDATION_DIR, validation_inputs
from dicomnode.model.torchnet import float64_run
from training.calibration import DEFAULT_CALIBRATION_IMAGES, write_validation_images
from training.card_claims import operating_points_report, trained_on
from training.checkpoint import load_checkpoint
from training.config import ConfigError
from training.evaluate import compute_report, draw_plots
from training.metrics import (
    bootstrap_auc_ci,
    brier_score,
    expected_calibration_error,
    roc_auc,
)
from training.thresholds import calibrated_probability, choose_thresholds, fit_temperature

ONNX_FILE = "model.onnx"
DEFAULT_NAME = "dicomnode fracture triage"


class ExportError(RuntimeError):
    """The export would produce a package that does not reproduce the trained model."""


def probe_image(*, seed: int = 0) -> np.ndarray:
    """A fixed non-square greyscale test image (gradient, disc and noise) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:300, 0:240].astype(np.float32)
    disc = ((yy - 150) ** 2 + (xx - 120) ** 2 < 60**2).astype(np.float32)
    image = 0.2 + 0.4 * xx / 240 + 0.3 * disc + rng.normal(0, 0.05, xx.shape)
    return np.clip(image, 0, 1).astype(np.float32)


class _LogitsAndFeatures(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model: Any = self.model  # a timm model: forward_features / forward_head
        features = model.forward_features(x)
        return model.forward_head(features), features


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    inputs: torch.Tensor,
    *,
    card: ModelCard,
) -> tuple[Equivalence, dict[str, float]]:
    """Write `path`, run it with ONNX Runtime on `inputs` and compare with PyTorch.

    Returns the node's equivalence figures (`dicomnode.model.equivalence`: decisions at both
    operating points, |Δp|, the heatmap as a reader sees it), what the export gates on, and,
    for information, the largest absolute logit difference and the feature difference
    relative to the features' largest magnitude."""
    import onnxruntime

    wrapper = _LogitsAndFeatures(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            (inputs[:1],),
            str(path),
            input_names=["input"],
            output_names=["logits", "features"],
            dynamic_axes={name: {0: "batch"} for name in ("input", "logits", "features")},
            opset_version=17,
            dynamo=False,  # the dynamo exporter needs onnxscript, not a dependency
        )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_logits, ort_features = session.run(None, {"input": inputs.numpy()})
    cam_weight = _cam_weight(model, card.fracture_index)
    with torch.inference_mode():
        logits, features = (t.numpy() for t in wrapper(inputs))
    reference = (logits, np.einsum("bchw,c->bhw", features, cam_weight))
    double = float64_run(model, torch.from_numpy(cam_weight))
    keep = reproducible(double, inputs.numpy(), reference, card=card)
    figures = compare_outputs(
        (reference[0][keep], reference[1][keep]),
        (ort_logits[keep], np.einsum("bchw,c->bhw", ort_features[keep], cam_weight)),
        card=card,
    )
    scale = max(1.0, float(np.abs(features).max()))
    return figures, {
        "unreproducible_inputs": int((~keep).sum()),
        "logits_max_abs": float(np.abs(ort_logits - logits)[keep].max(initial=0.0)),
        "features_relative": float(np.abs(ort_features - features)[keep].max(initial=0.0)) / scale,
    }


def onnx_refusal(figures: Equivalence) -> str | None:
    """Why the figures of `export_onnx` refuse the ONNX graph, or None when they pass."""
    if not figures.inputs:
        return "every check input is ill-conditioned (PyTorch fp32 differs from double precision)"
    if figures.passed:
        return None
    return (
        f"ONNX Runtime does not reproduce PyTorch on {figures.inputs} check inputs: "
        + "; ".join(figures.reasons())
    )


def check_batch(card: ModelCard, package: Path) -> torch.Tensor:
    """What the export's ONNX check runs on: the probe image, the node's seeded radiograph-like
    check inputs and the validation images the package carries. Not random noise: a network
    trained from scratch can be chaotic far from its data (logits of 1e4 that PyTorch itself
    does not reproduce between batch sizes), which says nothing about the radiographs it is
    given."""
    probe = preprocess.to_model_input(probe_image(), input_size=card.input_size, mean=card.mean,
                                      std=card.std)  # fmt: skip
    calibration, check = validation_inputs(package, card)
    return torch.from_numpy(
        np.concatenate([probe[None], check_inputs(card.input_size), calibration, check])
    )


def _cam_weight(model: torch.nn.Module, fracture: int) -> np.ndarray:
    """w_fracture - mean(w_other) of the linear head, as `dicomnode.model.classifier` builds
    the CAM."""
    weight = model.get_classifier().weight.detach().to(torch.float32).numpy()  # type: ignore[operator]
    others = [i for i in range(weight.shape[0]) if i != fracture]
    return np.asarray(weight[fracture] - weight[others].mean(axis=0))


def _limitations(checkpoint: dict[str, Any]) -> tuple[str, ...]:
    data = checkpoint["data"]
    notes = [
        "Operating points and calibration were fitted on a validation split of the training "
        "source; check them on local data before clinical use.",
    ]
    if not data.get("group_by"):
        notes.append(
            "Split by image, not by patient (no patient identifiers): images of one patient "
            "may be in both training and validation, so the metrics may be optimistic."
        )
    if checkpoint.get("init") == "random":
        notes.append("Trained from random initialisation (no ImageNet weights).")
    return tuple(notes)


def export(
    *,
    checkpoint: Path,
    out: Path,
    onnx: bool = False,
    name: str = DEFAULT_NAME,
    version: str = "",
    target_sensitivity: float = 0.95,
    target_specificity: float = 0.95,
    calibrate: bool = True,
    training_data: str = "",
    min_image_size: int | None = None,
    body_parts: Sequence[str] | None = None,
    force: bool = False,
    allow_small_validation: bool = False,
    calibration_data: Path | None = None,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    split_file: Path | None = None,
) -> ModelCard:
    """Write the package; return its card (see the module docstring)."""
    state = load_checkpoint(checkpoint)
    info, validation = state["model_info"], state["validation"]
    class_names = tuple(info["class_names"])
    fracture = class_names.index("fracture")
    model = create_model(info["architecture"], num_classes=len(class_names))
    model.load_state_dict(state["model"])
    model.eval()

    logits = validation["logits"].double().numpy()
    labels = validation["labels"].numpy().astype(np.int64)
    targets = np.where(labels == 1, fracture, 1 - fracture)  # label 1 = fracture class
    temperature = fit_temperature(logits, targets) if calibrate else 1.0
    p_raw = calibrated_probability(logits, temperature=1.0, class_index=fracture)
    p = calibrated_probability(logits, temperature=temperature, class_index=fracture)
    points = choose_thresholds(
        labels, p, target_sensitivity=target_sensitivity, target_specificity=target_specificity
    )
    auc = roc_auc(labels, p)
    ci = bootstrap_auc_ci(labels, p)
    metrics: dict[str, Any] = {
        "validation": {
            "images": int(labels.size),
            "fracture": int(labels.sum()),
            "epoch": int(validation["epoch"]),
            "auc": round(auc, 6),
            "auc_ci95": [round(ci[0], 6), round(ci[1], 6)],
            "ece": round(expected_calibration_error(labels, p), 6),
            "ece_before_temperature": round(expected_calibration_error(labels, p_raw), 6),
            "brier": round(brier_score(labels, p), 6),
            **{k: v for k, v in points.to_json().items() if k not in ("low", "high")},
            "operating_points": operating_points_report(labels, p, points),
        },
        "training": {
            "best_epoch": int(state["best"]["epoch"]),
            "epochs_run": int(state.get("epochs_run", state["epoch"])),
            "init": str(state.get("init", "")),
            "split": {k: state["data"][k] for k in ("split_seed", "group_by", "counts")},
            "profile": state["data"].get("profile", {}),
            "versions": dict(state.get("versions", {})),
        },
    }

    weak = [w.message() for w in assess_metrics(metrics)]
    if weak and not allow_small_validation:
        raise ExportError(
            f"the validation evidence is too small for the package's claims ({' | '.join(weak)}):"
            " train and validate on more data, or export anyway with --allow-small-validation "
            "(the warning is then recorded in the card)"
        )
    out.mkdir(parents=True, exist_ok=True)
    if (out / CARD_FILE).exists() and not force:
        raise ExportError(f"{out} already holds a model package (use --force to replace it)")
    if not onnx:
        (out / ONNX_FILE).unlink(missing_ok=True)  # never leave a stale ONNX next to new weights
    _carry_validation_images(state, out, metrics, calibration_data, calibration_images, split_file)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / WEIGHTS_FILE), metadata={"architecture": info["architecture"]})
    created = dt.datetime.now(dt.UTC)
    size = int(info["input_size"])
    probe = probe_image()
    batch = torch.from_numpy(
        np.stack(
            [preprocess.to_model_input(probe, input_size=size, mean=info["mean"], std=info["std"])]
        )
    )
    scope = trained_on(state, body_parts=body_parts, min_image_size=min_image_size)
    card = ModelCard(
        name=name,
        version=version
        or f"{info['architecture']}-{created:%Y%m%d}-{sha256_file(out / WEIGHTS_FILE)[:8]}",
        architecture=info["architecture"],
        input_size=size,
        mean=tuple(info["mean"]),
        std=tuple(info["std"]),
        class_names=class_names,
        threshold_low=points.low,
        threshold_high=points.high,
        trained=True,
        temperature=temperature,
        min_image_size=scope.min_image_size,
        body_parts=scope.body_parts,
        intended_use=scope.intended_use,
        training_data=training_data or state["data"]["description"],
        metrics=metrics,
        created=created.isoformat(timespec="seconds"),
        limitations=_limitations(state)
        + scope.notes
        + tuple(f"Exported with --allow-small-validation: {text}." for text in weak),
    )
    if onnx:
        figures, extra = export_onnx(model, out / ONNX_FILE, check_batch(card, out), card=card)
        metrics["onnx_check"] = {
            **figures.to_json(),
            **{k: (v if isinstance(v, int) else float(f"{v:.3e}")) for k, v in extra.items()},
        }
        refusal = onnx_refusal(figures)
        if refusal:
            (out / ONNX_FILE).unlink()
            raise ExportError(f"{refusal}; model.onnx was not kept")
    _validation_plots(out / PLOTS_DIR, labels, p, card)
    card = write_card(out, card)

    # The package must give the checkpoint's probability through the node's own code path.
    with torch.inference_mode():
        expected = calibrated_probability(
            model(batch).double().numpy(), temperature=temperature, class_index=fracture
        )[0]
    served = Classifier.from_package(out, device="cpu").predict(probe).probability
    # The node serves through ONNX Runtime by default: the same tolerance as its load-time check.
    if abs(served - expected) > MAX_PROBABILITY_DELTA:
        (out / CARD_FILE).unlink()  # an unusable package must not be loadable
        raise ExportError(
            f"the package gives P(fracture) {served:.6f} on the probe image, the checkpoint "
            f"{expected:.6f} (allowed difference {MAX_PROBABILITY_DELTA:.0e}): preprocessing "
            "or the classifier differs from training"
        )
    return card


def _validation_plots(folder: Path, labels: np.ndarray, p: np.ndarray, card: ModelCard) -> None:
    """ROC, PR and reliability plots of the validation set, drawn as `training.evaluate`
    draws a test set's, into the package (the node's About page shows them)."""
    outcomes = [str(outcome_for(float(x), card)) for x in p]
    folder.mkdir(exist_ok=True)
    draw_plots(labels, p, compute_report(labels, p, outcomes, card=card), folder)


def _carry_validation_images(
    state: dict[str, Any],
    out: Path,
    metrics: dict[str, Any],
    data: Path | None,
    count: int,
    split_file: Path | None,
) -> None:
    """`out/validation/` from the run's validation split when `data` is given
    (`training.calibration`); otherwise none, and a stale folder is removed."""
    if data is None or count <= 0:
        shutil.rmtree(out / VALIDATION_DIR, ignore_errors=True)
        return
    written = write_validation_images(state=state, data=data, package=out, count=count,
                                      split_file=split_file)  # fmt: skip
    size = int(state["model_info"]["input_size"])
    metrics["validation_images"] = written.to_json(input_size=size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="e.g. RUN/best.pt")
    parser.add_argument("--out", required=True, type=Path, help="package folder to write")
    parser.add_argument("--onnx", action="store_true", help="also write a checked model.onnx")
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument(
        "--version", default="", help="default: ARCH-YYYYMMDD-<first 8 hex of the weights' SHA-256>"
    )
    parser.add_argument("--target-sensitivity", type=float, default=0.95)
    parser.add_argument("--target-specificity", type=float, default=0.95)
    parser.add_argument(
        "--no-temperature", action="store_true", help="skip temperature scaling (T = 1)"
    )
    parser.add_argument(
        "--training-data",
        default="",
        help="description for the card (default: from the checkpoint)",
    )
    parser.add_argument(
        "--min-image-size",
        type=int,
        help="smallest rows and columns the node classifies; smaller images are skipped "
        "(default: the smallest training image, or "
        f"{DEFAULT_MIN_IMAGE_SIZE} for older checkpoints; 0: no minimum)",
    )
    parser.add_argument(
        "--body-parts",
        help="comma-separated body parts for the card (default: from the training data, e.g. "
        "FracAtlas's hand/leg/hip/shoulder columns)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing package")
    parser.add_argument(
        "--allow-small-validation",
        action="store_true",
        help="export even when the validation set is too small for the package's claims "
        "(recorded in the card's limitations and shown by the node)",
    )
    parser.add_argument(
        "--calibration-data",
        type=Path,
        help="the training data folder: carry up to --calibration-images of the run's validation "
        "images in the package (pixels only, PNG) so that the node can calibrate and check int8 "
        "(runtime = auto). They are patients' pixels: share the package only where they may go",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        help=f"how many (default {DEFAULT_CALIBRATION_IMAGES}; 0: none)",
    )
    parser.add_argument(
        "--split-file",
        type=Path,
        help="the run's split (default: the one recorded in the checkpoint, RUN/split.json)",
    )
    return parser


def _split_list(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(v.strip() for v in value.split(",") if v.strip())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        card = export(
            checkpoint=args.checkpoint,
            out=args.out,
            onnx=args.onnx,
            name=args.name,
            version=args.version,
            target_sensitivity=args.target_sensitivity,
            target_specificity=args.target_specificity,
            calibrate=not args.no_temperature,
            training_data=args.training_data,
            min_image_size=args.min_image_size,
            body_parts=_split_list(args.body_parts),
            force=args.force,
            allow_small_validation=args.allow_small_validation,
            calibration_data=args.calibration_data,
            calibration_images=args.calibration_images,
            split_file=args.split_file,
        )
    except (ConfigError, ExportError, ValueError, OSError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 2
    validation = card.metrics["validation"]
    print(
        f"wrote {args.out}: {card.architecture} version {card.version}, thresholds "
        f"{card.threshold_low:.4f}/{card.threshold_high:.4f}, temperature "
        f"{card.temperature:.3f}, validation AUC {validation['auc']:.4f}"
    )
    for name, point in validation["operating_points"].items():
        sens, spec = (
            f"{key} {point[key]:.3f} (95% CI {point[key + '_ci95'][0]:.3f}-"
            f"{point[key + '_ci95'][1]:.3f})"
            for key in ("sensitivity", "specificity")
        )
        print(
            f"{name} threshold {point['threshold']:.4f}: {sens}, {spec} on {point['fracture']} "
            f"fracture / {point['normal']} normal validation images"
        )
    print(
        f"card: body parts {', '.join(card.body_parts) or 'not recorded'}; minimum image size "
        f"{card.min_image_size} px"
    )
    carried = card.metrics.get("validation_images")
    if carried:
        print(
            f"the package carries {carried['images']} validation images ({carried['fracture']} "
            f"fracture) in {VALIDATION_DIR}/ for the node's int8 calibration: patients' pixels, "
            f"share it only where they may go ({carried['skipped_burned_in_annotation']} skipped: "
            "Burned In Annotation not NO)"
        )
    else:
        print(f"no {VALIDATION_DIR}/ images: the node will not try int8 (see --calibration-data)")
    for note in card.limitations:
        if note.startswith("Exported with --allow-small-validation"):
            print(f"WARNING: {note}", file=sys.stderr)
    if "onnx_check" in card.metrics:
        check = card.metrics["onnx_check"]
        print(
            f"ONNX Runtime vs PyTorch on {check['inputs']} check inputs "
            f"({check['unreproducible_inputs']} ill-conditioned ones left out): "
            f"{check['decisions_differ']} decisions differ, max |Δ P(fracture)| "
            f"{check['max_delta_p']:.2e} (allowed {MAX_DELTA_P:.0e}), heatmap half-peak IoU "
            f"{check['min_iou']:.3f} (at least {MIN_HALF_PEAK_IOU}), peak shift "
            f"{check['max_peak_shift']:.1%}; logits max |Δ| {check['logits_max_abs']:.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
