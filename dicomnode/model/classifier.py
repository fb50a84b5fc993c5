"""Fracture classifier: loads a model package (or the untrained demo), predicts, explains.

One forward pass per batch: `forward_features` gives the last feature map F (B, C, h, w),
`forward_head` turns it into logits, and the heatmap is a class activation map from the same
F. For a global-average-pool + linear head, logit_k = b_k + mean_hw(w_k · F), so with a
two-class softmax the evidence for "fracture" at each cell is (w_fracture - w_normal) · F —
the gradient of the logit difference, i.e. what Grad-CAM computes for this head. Architectures
without such a head are refused rather than given a misleading heatmap.

The probability is softmax(logits / card.temperature)[fracture]. Threads are the node's
business (`load_classifier` sets `torch.set_num_threads` when PyTorch runs). The forward pass
runs in the chosen inference runtime (PyTorch, ONNX Runtime, OpenVINO: see `runtime`), each
checked against PyTorch when the classifier is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from dicomnode.imaging import preprocess
from dicomnode.imaging.regions import Region, find_regions
from dicomnode.model.card import ModelCard, ModelPackageError, read_package
from dicomnode.model.runtime import (
    Backend,
    Runtime,
    RuntimeCheckFailed,
    probabilities,
    resolve_device,
)

if TYPE_CHECKING:  # PyTorch is imported only where a torch model is built (see `prepared`)
    import torch

DEMO_NAME = "dicomnode fracture triage"

log = structlog.stdlib.get_logger("dicomnode.classifier")


class Outcome(StrEnum):
    POSITIVE = "positive"
    DOUBT = "doubt"
    NEGATIVE = "negative"


def outcome_for(probability: float, card: ModelCard) -> Outcome:
    """Positive at or above the high-specificity threshold, negative below the
    high-sensitivity one, doubt in between."""
    if probability >= card.threshold_high:
        return Outcome.POSITIVE
    if probability < card.threshold_low:
        return Outcome.NEGATIVE
    return Outcome.DOUBT


@dataclass(frozen=True)
class Prediction:
    #: Calibrated P(fracture) in [0, 1] (temperature from the card).
    probability: float
    outcome: Outcome
    #: float32 in [0, 1], same aspect ratio and orientation as the input image (smaller:
    #: long side at most `preprocess.HEATMAP_MAX_SIZE`); all zeros when nothing is evidence.
    heatmap: np.ndarray
    #: Where the heatmap is hottest (`imaging.regions`), for positive and doubt outcomes;
    #: none for a negative one.
    regions: tuple[Region, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be in [0, 1]")
        if self.heatmap.ndim != 2:
            raise ValueError("heatmap must be 2-D")


def create_model(
    architecture: str, *, num_classes: int = 2, pretrained: bool = False
) -> torch.nn.Module:
    """A timm model with a `num_classes` head (no download unless `pretrained`)."""
    import timm

    return timm.create_model(architecture, pretrained=pretrained, num_classes=num_classes)


def _check_cam_head(model: torch.nn.Module, card: ModelCard) -> torch.nn.Linear:
    """The linear classifier of an average-pool + linear head, or ModelPackageError."""
    import torch

    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    pool = getattr(model, "global_pool", None)
    timm_api = all(
        callable(getattr(model, name, None)) for name in ("forward_features", "forward_head")
    )
    if (
        not timm_api
        or not isinstance(head, torch.nn.Linear)
        or getattr(pool, "pool_type", None) != "avg"
    ):
        raise ModelPackageError(
            f"architecture {card.architecture} has no average-pool + linear head "
            "(needed for the class activation map)"
        )
    if head.out_features != len(card.class_names):
        raise ModelPackageError(
            f"model has {head.out_features} outputs but the card names "
            f"{len(card.class_names)} classes"
        )
    return head


class Classifier:
    """A model in eval mode on one device with its card; safe to call from several threads."""

    card: ModelCard
    device: str
    #: The model cache files this classifier is served from (kept by `dicomnode.model.cache`).
    cache_files: tuple[Path, ...] = ()
    #: What `runtime = "auto"` measured on this host (`dicomnode.model.select.record`): the
    #: choice, the timings and the equivalence figures; None for an explicit runtime.
    selection: dict[str, Any] | None = None

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        *,
        device: str = "auto",
        runtime: str = "torch",
        cache_dir: Path | None = None,
        threads: int = 0,
        spinning: bool = False,
        parallel: bool = False,
    ) -> None:
        import torch

        from dicomnode.model.torchnet import CamNet

        self.card = card
        self.device = resolve_device(device)
        head = _check_cam_head(model, card)
        model.eval().requires_grad_(False)
        self._model: torch.nn.Module | None = model.to(self.device).to(
            memory_format=torch.channels_last
        )
        weight = head.weight.detach().to(torch.float32)
        fracture = card.fracture_index
        others = [i for i in range(weight.shape[0]) if i != fracture]
        # Evidence for fracture against the other class(es): w_f - w_n for two classes.
        cam_weight = (weight[fracture] - weight[others].mean(dim=0)).to(self.device)
        self._net: Any = CamNet(self._model, cam_weight).eval()
        self._backend = self._build_backend(
            Runtime(runtime), cache_dir, threads, spinning=spinning, parallel=parallel
        )

    @classmethod
    def served(
        cls, card: ModelCard, backend: Backend, *, cache_files: tuple[Path, ...] = ()
    ) -> Classifier:
        """A classifier around an already checked ONNX Runtime/OpenVINO backend (CPU), built
        without PyTorch (`dicomnode.model.prepared`); it has no `model`."""
        self = cls.__new__(cls)
        self.card, self.device, self._backend = card, "cpu", backend
        self.cache_files = cache_files
        self._model = self._net = None
        return self

    def _build_backend(
        self,
        runtime: Runtime,
        cache_dir: Path | None,
        threads: int,
        *,
        spinning: bool,
        parallel: bool,
    ) -> Backend:
        from dicomnode.model.torchnet import build_backend, state_sha256

        chosen = runtime
        if runtime == Runtime.AUTO:  # measured fastest at equal outputs (benchmarks/RESULTS.md)
            chosen = Runtime.TORCH if self.device != "cpu" else Runtime.ONNXRUNTIME
        try:
            return build_backend(
                chosen,
                net=self._net,
                device=self.device,
                input_size=self.card.input_size,
                weights_sha256=self.card.weights_sha256 or state_sha256(self.model),
                architecture=self.card.architecture,
                fracture_index=self.card.fracture_index,
                classes=len(self.card.class_names),
                cache_dir=cache_dir,
                card=self.card,
                threads=threads,
                spinning=spinning,
                parallel=parallel,
            )
        except RuntimeCheckFailed as exc:
            if runtime != Runtime.AUTO:
                raise
            log.warning("runtime auto: falling back to torch", reason=str(exc))
            return build_backend(Runtime.TORCH, net=self._net, device=self.device,
                                 input_size=self.card.input_size, weights_sha256="",
                                 architecture=self.card.architecture, fracture_index=0,
                                 classes=0, cache_dir=None, card=self.card)  # fmt: skip

    @property
    def runtime(self) -> str:
        """The inference runtime in use (torch, onnxruntime, openvino-f32, …); chosen by
        measurement: "auto (openvino-bf16)"."""
        name = self._backend.name
        return f"auto ({name})" if self.selection is not None else name

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        return probabilities(logits, self.card)

    @property
    def model(self) -> torch.nn.Module:
        """The underlying network (eval mode), e.g. for export."""
        if self._model is None:
            raise RuntimeError("this classifier was loaded without PyTorch: it has no model")
        return self._model

    @classmethod
    def from_package(
        cls, folder: str | Path, *, device: str = "auto", **runtime: Any
    ) -> Classifier:
        """Load a verified package (card ↔ weights SHA-256 via `read_package`), strictly."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        card, weights_path = read_package(folder)
        try:
            model = create_model(card.architecture, num_classes=len(card.class_names))
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise ModelPackageError(f"unknown architecture {card.architecture!r}") from exc
        try:
            state = load_file(weights_path, device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelPackageError(f"cannot read the weights: {exc}") from exc
        missing, unexpected = _key_mismatch(model, state)
        if missing or unexpected:
            raise ModelPackageError(
                f"weights do not fit architecture {card.architecture}: "
                f"{len(missing)} missing keys (e.g. {', '.join(missing[:3]) or '-'}), "
                f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3]) or '-'})"
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:  # shapes differ
            first = str(exc).splitlines()[1:2] or ["shape mismatch"]
            raise ModelPackageError(
                f"weights do not fit architecture {card.architecture}: {first[0].strip()}"
            ) from exc
        return cls(model, card, device=device, **runtime)

    @classmethod
    def demo(
        cls,
        *,
        architecture: str = "efficientnet_b4",
        device: str = "auto",
        seed: int = 0,
        **runtime: Any,
    ) -> Classifier:
        """Deterministic random initialisation, labelled untrained (UNTRAINED DEMO).

        Input size and normalisation come from timm's data config for the architecture at
        its test size (efficientnet_b4: 384, the size timm evaluates it at).
        """
        import torch
        from timm.data import resolve_model_data_config

        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            model = create_model(architecture, num_classes=2)
        config = resolve_model_data_config(model, use_test_size=True)
        mean, std = (tuple(float(v) for v in config[key]) for key in ("mean", "std"))
        card = ModelCard(
            name=DEMO_NAME,
            version=f"demo-{architecture}-seed{seed}",
            architecture=architecture,
            input_size=int(config["input_size"][-1]),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            trained=False,
            training_data="none: randomly initialised weights",
            limitations=("Untrained demonstration model: its outputs carry no information.",),
        )
        return cls(model, card, device=device, **runtime)

    def predict(self, image: np.ndarray) -> Prediction:
        """Classify one image from `preprocess.to_grayscale` (float32 HxW in [0, 1])."""
        return self.predict_batch([image])[0]

    def predict_batch(
        self, images: Sequence[np.ndarray], *, busy: bool = False
    ) -> list[Prediction]:
        """Classify several images in one forward pass (any sizes; each is letterboxed).

        `busy`: other images are being classified at the same time (see `Backend.run`)."""
        if not images:
            return []
        card = self.card
        batch = np.stack(
            [
                preprocess.to_model_input(
                    image, input_size=card.input_size, mean=card.mean, std=card.std
                )
                for image in images
            ]
        )
        logits, cam = self._backend.run(batch, busy=busy)
        fracture = self._probabilities(logits)
        cams = np.maximum(cam, 0.0).astype(np.float32)
        predictions = []
        for image, p, grid in zip(images, fracture, cams, strict=True):
            probability = float(np.clip(p, 0.0, 1.0))
            outcome = outcome_for(probability, card)
            heatmap = _image_heatmap(grid, (int(image.shape[0]), int(image.shape[1])))
            regions = (
                ()
                if outcome == Outcome.NEGATIVE
                else find_regions(heatmap, fraction=card.region_threshold)
            )
            predictions.append(
                Prediction(
                    probability=probability, outcome=outcome, heatmap=heatmap, regions=regions
                )
            )
        return predictions


def _image_heatmap(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Non-negative CAM grid → image geometry, normalised to a peak of 1 over the image itself
    (evidence in the letterbox bars is cropped away first), all zeros when there is none."""
    heatmap = preprocess.heatmap_to_image(grid, shape)
    peak = float(heatmap.max())
    if peak <= 0.0 or not np.isfinite(peak):
        return np.zeros_like(heatmap)
    heatmap *= np.float32(1.0 / peak)
    return np.clip(heatmap, 0.0, 1.0, out=heatmap)


def _key_mismatch(
    model: torch.nn.Module, state: dict[str, torch.Tensor]
) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def load_classifier(
    package: str | Path | None,
    *,
    device: str = "auto",
    demo_architecture: str = "efficientnet_b4",
    runtime: str = "torch",
    cache_dir: Path | None = None,
    threads: int = 0,
    spinning: bool = False,
    parallel: bool = False,
) -> Classifier:
    """The package's classifier, or the untrained demo when no package is configured.

    `runtime` picks the inference runtime (see `dicomnode.model.runtime`); exported graphs are
    cached in `cache_dir`. With a cache, ONNX Runtime and OpenVINO on the CPU are served
    without importing PyTorch (`dicomnode.model.prepared`); `threads` is also PyTorch's thread count
    when PyTorch runs the model. `spinning`, `parallel`: see `runtime.OnnxRuntimeBackend`
    (`parallel` is for callers classifying from several threads at once).
    """
    chosen = Runtime(runtime)
    selection: dict[str, Any] | None = None
    if cache_dir is not None and chosen != Runtime.TORCH and resolve_device(device) == "cpu":
        from dicomnode.model import prepared

        source = prepared.ModelSource(
            Path(package) if package else None, demo_architecture=demo_architecture
        )
        try:
            card, backend, files, selection = prepared.load(
                source,
                runtime=chosen,
                cache_dir=cache_dir,
                threads=threads,
                spinning=spinning,
                parallel=parallel,
            )
            if backend is not None:
                served = Classifier.served(card, backend, cache_files=files)
                served.selection = selection
                return served
            runtime = Runtime.TORCH  # measured fastest on this host
        except RuntimeCheckFailed as exc:
            if chosen != Runtime.AUTO:
                raise
            log.warning("runtime auto: falling back to torch", reason=str(exc))
            runtime = Runtime.TORCH
    if threads:
        import torch

        torch.set_num_threads(threads)
    options: dict[str, Any] = {"runtime": runtime, "cache_dir": cache_dir, "threads": threads,
                               "spinning": spinning, "parallel": parallel}  # fmt: skip
    if package is None or str(package) == "":
        classifier = Classifier.demo(architecture=demo_architecture, device=device, **options)
    else:
        classifier = Classifier.from_package(package, device=device, **options)
    classifier.selection = selection  # PyTorch measured fastest by `auto`, else None
    return classifier
