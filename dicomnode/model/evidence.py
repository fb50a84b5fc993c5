"""How much a model card's validation evidence supports its claims, with the numbers.

A card records, per evaluated data set (`metrics.validation` from `training.export`, and e.g.
`metrics.test` from `training.evaluate --update-card`), the number of images, of fractures
(the positives), the AUC and its 95 % bootstrap confidence interval. A package validated on
9 images (3 fractures, AUC CI 0.33-1.00) says nothing its thresholds or AUC seem to say, yet
loads like any other. `assess` finds such cards; the export refuses them by default, and
`doctor`, the node's start-up log, the About page and `GET /api/model` show the warnings.

Why these bounds (docs/model-card.md, "Validation evidence"):

* MIN_POSITIVES = 50 fractures: the export's high-sensitivity point targets 0.95. Measured on
  50 fractures, a sensitivity of 0.96 (48/50) has a 95 % Wilson interval of 0.87-0.99; on 20
  it is 0.76-0.99 — the target can no longer be told from 0.8.
* MAX_AUC_CI_WIDTH = 0.20: a wider interval cannot tell a good model (AUC 0.9) from a
  mediocre one (0.7).

Pure but for `log_warnings`, which writes to the logger it is given: values in, values out;
the messages are English, for logs, the command line and the API; the pages render the same
parts through their catalogue (`parts`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from dicomnode.model.card import ModelCard

MIN_POSITIVES = 50
MAX_AUC_CI_WIDTH = 0.20
#: Entries of `card.metrics` that are not evaluated data sets.
NOT_DATA_SETS = frozenset({"training", "onnx_check"})

#: The message parts (English); http/i18n.py holds the same keys in every language.
ENGLISH: dict[str, str] = {
    "evidence.untrained": "untrained demo model: no validation evidence at all",
    "evidence.no_evidence": "the model card records no validation or test metrics",
    "evidence.set": "{split}: {images} ({positives})",
    "evidence.set_positives_unknown": "{split}: {images} (number of fractures not recorded)",
    "evidence.set_size_unknown": "{split}: number of images and fractures not recorded",
    "evidence.few_positives": "fewer than {min_positives}",
    "evidence.wide_ci": "AUC {auc}, 95 % CI {low}–{high} is wider than {max_width}",
    "evidence.ci_unknown": "no confidence interval of the AUC recorded",
}


#: Parameters that are counts, and the plural message that names each with its noun
#: (`count.images`: "1 image", "9 images"; Ukrainian has three forms: "3 переломи", "5 переломів").
COUNTED: dict[str, str] = {
    "images": "count.images",
    "positives": "count.fractures",
    "min_positives": "count.fractures",
}
#: The English forms (singular, plural) of the `COUNTED` messages.
ENGLISH_COUNTS: dict[str, tuple[str, str]] = {
    "count.images": ("{n} image", "{n} images"),
    "count.fractures": ("{n} fracture", "{n} fractures"),
}


def english_count(key: str, n: int) -> str:
    singular, plural = ENGLISH_COUNTS[key]
    return (singular if n == 1 else plural).format(n=n)


def significant(value: float, digits: int = 3) -> str:
    """`value` with `digits` significant digits, trailing zeros kept (0.950, 1.00, 0.0123)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:#.{digits}g}".rstrip(".")


@dataclass(frozen=True)
class DataSetEvidence:
    """What a card records about one evaluated data set (None: not recorded)."""

    split: str
    images: int | None
    positives: int | None
    auc: float | None
    auc_ci95: tuple[float, float] | None

    @property
    def ci_width(self) -> float | None:
        return None if self.auc_ci95 is None else self.auc_ci95[1] - self.auc_ci95[0]


@dataclass(frozen=True)
class EvidenceWarning:
    """One warning: `code` untrained, no_evidence or data_set; for a data set, its `problems`
    (few_positives, positives_unknown, size_unknown, wide_ci, ci_unknown)."""

    code: str
    data_set: DataSetEvidence | None = None
    problems: tuple[str, ...] = ()
    min_positives: int = MIN_POSITIVES
    max_ci_width: float = MAX_AUC_CI_WIDTH

    def parts(self, split_name: Callable[[str], str] = str) -> list[tuple[str, dict[str, str]]]:
        """(message key, its parameters) in reading order; `message` joins them."""
        d = self.data_set
        if d is None:
            return [(f"evidence.{self.code}", {})]
        split = {"split": split_name(d.split)}
        if d.images is None:
            found = [("evidence.set_size_unknown", split)]
        elif d.positives is None:
            found = [("evidence.set_positives_unknown", {**split, "images": str(d.images)})]
        else:
            found = [("evidence.set", {**split, "images": str(d.images),
                                        "positives": str(d.positives)})]  # fmt: skip
        if "few_positives" in self.problems:
            found.append(("evidence.few_positives", {"min_positives": str(self.min_positives)}))
        if "wide_ci" in self.problems and d.auc_ci95 is not None:
            low, high = d.auc_ci95
            found.append(("evidence.wide_ci", {
                "auc": "–" if d.auc is None else significant(d.auc), "low": significant(low),
                "high": significant(high), "max_width": f"{self.max_ci_width:.2f}",
            }))  # fmt: skip
        if "ci_unknown" in self.problems:
            found.append(("evidence.ci_unknown", {}))
        return found

    def message(
        self,
        templates: Callable[[str], str] | None = None,
        *,
        split_name: Callable[[str], str] = str,
        count: Callable[[str, int], str] = english_count,
    ) -> str:
        """The warning as one line; `templates` maps a key to its text (default English),
        `split_name` names a data set (default: its key in the card, e.g. "validation"),
        `count(key, n)` names a number with its noun (`COUNTED`; default English)."""
        text = templates or ENGLISH.__getitem__
        return "; ".join(
            _format(text(key), _counted(params, count)) for key, params in self.parts(split_name)
        )


def _counted(params: Mapping[str, str], count: Callable[[str, int], str]) -> dict[str, str]:
    return {
        name: count(COUNTED[name], int(value)) if name in COUNTED else value
        for name, value in params.items()
    }


def _format(template: str, params: Mapping[str, str]) -> str:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def data_sets(metrics: Mapping[str, Any]) -> list[DataSetEvidence]:
    """The evaluated data sets a card's `metrics` records (validation first)."""
    found = []
    for split, record in sorted(metrics.items(), key=lambda item: item[0] != "validation"):
        if split in NOT_DATA_SETS or not isinstance(record, Mapping):
            continue
        if not {"images", "auc", "auc_ci95"} & set(record):
            continue
        ci = record.get("auc_ci95")
        bounds = None
        if isinstance(ci, list | tuple) and len(ci) == 2:
            low, high = _float(ci[0]), _float(ci[1])
            bounds = (low, high) if low is not None and high is not None else None
        found.append(DataSetEvidence(
            split=str(split), images=_int(record.get("images")),
            positives=_int(record.get("fracture")), auc=_float(record.get("auc")),
            auc_ci95=bounds,
        ))  # fmt: skip
    return found


def assess_metrics(
    metrics: Mapping[str, Any],
    *,
    min_positives: int = MIN_POSITIVES,
    max_ci_width: float = MAX_AUC_CI_WIDTH,
) -> list[EvidenceWarning]:
    """The warnings about a trained model's `metrics` (empty: the evidence is adequate)."""
    sets = data_sets(metrics)
    if not sets:
        return [EvidenceWarning("no_evidence")]
    warnings = []
    for d in sets:
        problems = []
        if d.images is None:
            problems.append("size_unknown")
        elif d.positives is None:
            problems.append("positives_unknown")
        elif d.positives < min_positives:
            problems.append("few_positives")
        width = d.ci_width
        if width is None:
            problems.append("ci_unknown")
        elif width > max_ci_width:
            problems.append("wide_ci")
        if problems:
            warnings.append(EvidenceWarning("data_set", d, tuple(problems),
                                            min_positives=min_positives,
                                            max_ci_width=max_ci_width))  # fmt: skip
    return warnings


def assess(card: ModelCard) -> list[EvidenceWarning]:
    """The warnings about `card`'s validation evidence; the untrained demo has none at all."""
    if not card.trained:
        return [EvidenceWarning("untrained")]
    return assess_metrics(card.metrics)


def messages(card: ModelCard) -> list[str]:
    """`assess(card)` as English lines (logs, `doctor`, `GET /api/model`)."""
    return [w.message() for w in assess(card)]


class _Logger(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...


def log_warnings(card: ModelCard, log: _Logger) -> None:
    """The node's start-up WARNING lines about the model it serves: the untrained demo, or one
    line per weak data set with its numbers."""
    if not card.trained:
        log.warning("running the UNTRAINED DEMO model: results are not meaningful",
                    model=card.display_name)  # fmt: skip
        return
    for text in messages(card):
        log.warning("model validation evidence is weak", model=card.display_name, warning=text)
