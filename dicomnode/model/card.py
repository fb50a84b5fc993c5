"""The model package: `weights.safetensors` + `model.json` (the model card).

A package is a folder. The card names the architecture, input size, normalisation, class
order, the two operating thresholds, what the model was trained on and how it scored, and the
SHA-256 of the weights. The node refuses a package whose card does not match its weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomnode.imaging.regions import DEFAULT_REGION_THRESHOLD

CARD_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
UNTRAINED_LABEL = "UNTRAINED DEMO"
#: The validation plots `training.export` draws into the package (shown on the About page).
PLOTS_DIR = "plots"
PLOT_FILES = {"roc": "roc.png", "pr": "pr.png", "reliability": "reliability.png"}
#: 256 px per side: the smallest radiographic cassette (18 cm) sampled that coarsely is at
#: 0.7 mm per pixel, 3.5x coarser than the 0.2 mm that digital radiography detectors and
#: guidance (ACR-AAPM-SIIM) take as the floor, so fine fracture lines are no longer resolved;
#: real CR/DX images have 1,000-4,000 px per side. Below it an image is a thumbnail, an icon
#: or a test pattern, not a radiograph to triage.
DEFAULT_MIN_IMAGE_SIZE = 256
#: Card fields stored as JSON lists.
_TUPLE_KEYS = ("mean", "std", "class_names", "limitations", "body_parts")


class ModelPackageError(ValueError):
    """A model package is missing, malformed, or its card does not match its weights."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    architecture: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    #: Class order of the network's output; must contain "fracture".
    class_names: tuple[str, ...] = ("normal", "fracture")
    #: High-sensitivity operating point: below it the outcome is negative.
    threshold_low: float = 0.3
    #: High-specificity operating point: at or above it the outcome is positive.
    threshold_high: float = 0.7
    #: False for the randomly initialised demo model; shown as UNTRAINED DEMO everywhere.
    trained: bool = True
    temperature: float = 1.0
    #: A suspected region is the heatmap at or above this fraction of its peak
    #: (`dicomnode.imaging.regions`); cards written before the field existed get the default.
    region_threshold: float = DEFAULT_REGION_THRESHOLD
    #: Smallest Rows and Columns (pixels) of an image the model classifies; a smaller one is
    #: skipped as too small to be a diagnostic radiograph (0: no minimum). Cards written
    #: before the field existed get this default.
    min_image_size: int = DEFAULT_MIN_IMAGE_SIZE
    training_data: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    weights_sha256: str = ""
    intended_use: str = "Triage aid for bone fracture on radiographs; not a diagnosis."
    limitations: tuple[str, ...] = ()
    #: Body parts of the training data (e.g. "hand", "leg"); empty when the data did not say.
    body_parts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold_low <= self.threshold_high <= 1.0:
            raise ModelPackageError(
                "thresholds must satisfy 0 <= threshold_low <= threshold_high <= 1"
            )
        if "fracture" not in self.class_names:
            raise ModelPackageError('class_names must contain "fracture"')
        if self.input_size < 16:
            raise ModelPackageError("input_size must be at least 16")
        if self.min_image_size < 0:
            raise ModelPackageError("min_image_size must be 0 (no minimum) or more")
        if self.temperature <= 0:
            raise ModelPackageError("temperature must be positive")
        if not 0.0 < self.region_threshold <= 1.0:
            raise ModelPackageError("region_threshold must be in (0, 1]")

    @property
    def fracture_index(self) -> int:
        return self.class_names.index("fracture")

    @property
    def display_name(self) -> str:
        """Name shown to users: the untrained demo says so in the name itself."""
        return self.name if self.trained else f"{self.name} ({UNTRAINED_LABEL})"

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in _TUPLE_KEYS:
            data[key] = list(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelPackageError(f"model.json has unknown keys: {', '.join(unknown)}")
        try:
            values = dict(data)
            for key in _TUPLE_KEYS:
                if key in values:
                    values[key] = tuple(values[key])
            return cls(**values)
        except TypeError as exc:
            raise ModelPackageError(f"model.json is incomplete or malformed: {exc}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_package(folder: str | Path) -> tuple[ModelCard, Path]:
    """Read and verify a package; return its card and the weights path."""
    folder = Path(folder)
    card_path, weights_path = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights_path.is_file():
        raise ModelPackageError(f"model package {folder} needs both {CARD_FILE} and {WEIGHTS_FILE}")
    try:
        card = ModelCard.from_json(json.loads(card_path.read_text("utf-8")))
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{card_path} is not valid JSON: {exc}") from exc
    actual = sha256_file(weights_path)
    if card.weights_sha256 != actual:
        raise ModelPackageError(
            f"{WEIGHTS_FILE} does not match the card (sha256 {actual[:12]}…, card says "
            f"{card.weights_sha256[:12] or 'nothing'}…): refusing the package"
        )
    return card, weights_path


def write_card(folder: str | Path, card: ModelCard) -> ModelCard:
    """Write `model.json` for weights already in `folder`, filling in their SHA-256."""
    folder = Path(folder)
    card = dataclasses.replace(card, weights_sha256=sha256_file(folder / WEIGHTS_FILE))
    (folder / CARD_FILE).write_text(json.dumps(card.to_json(), indent=2) + "\n", "utf-8")
    return card
