"""The "About the model" page and the validation plots of the served package.

What a radiologist or administrator must see before trusting the model: its card as tables
(numbers to 3 significant digits, with their 95 % confidence intervals where the card records
them), the operating points with the sensitivity and specificity they reached, the ROC, PR and
reliability plots `training.export` draws into the package, the intended use and limitations,
and the warnings of `dicomnode.model.evidence` (a small validation set, a wide interval) in a
box of their own. The untrained demo stays labelled as such.

The plots are served from the configured package folder (`model.package`, `plots/`) behind
the page's own authentication, and only while that folder still holds the served model (its
card names the same weights), so a package replaced on disk never shows another model's plots.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import FileResponse, Response

from dicomnode.http.context import ApiContext, Context, PageAuth
from dicomnode.http.i18n import LANGUAGES, Translator, translator
from dicomnode.http.pages import TEMPLATES, language, languages, login_page, remember_language
from dicomnode.model.card import CARD_FILE, PLOT_FILES, PLOTS_DIR, ModelCard
from dicomnode.model.evidence import assess, data_sets, significant

router = APIRouter(include_in_schema=False)
PLOT_ROUTE = "/about-model/plots"
_NONE = "–"
#: Keys of a data set's record shown in the evidence and operating-point tables.
_SHOWN = {"images", "fracture", "auc", "auc_ci95", "average_precision", "average_precision_ci95",
          "ece", "brier", "operating_points"} | {f"{m}_at_{p}{ci}" for m in ("sensitivity",
          "specificity") for p in ("low", "high") for ci in ("", "_ci95")}  # fmt: skip

Translate = Callable[[str], str]


def number(value: Any) -> str:
    """A card value as text: 3 significant digits, lists joined, nothing as a dash."""
    if value is None or value == "":
        return _NONE
    if isinstance(value, bool):
        return "✓" if value else "✗"
    if isinstance(value, float | int):
        return significant(value)
    if isinstance(value, list | tuple):
        return ", ".join(number(v) for v in value)
    return str(value)


def with_ci(record: Mapping[str, Any], key: str) -> str:
    """`record[key]` with its `{key}_ci95` interval when the card records one."""
    text = number(record.get(key))
    ci = record.get(f"{key}_ci95")
    if isinstance(ci, list | tuple) and len(ci) == 2 and text != _NONE:
        return f"{text} ({number(ci[0])}–{number(ci[1])})"
    return text


def split_name(t: Translate, split: str) -> str:
    key = f"about.split.{split}"
    text = t(key)
    return split if text == key else text


def evidence_rows(card: ModelCard, t: Translate) -> list[dict[str, str]]:
    """One row per evaluated data set (validation first)."""
    rows = []
    for found in data_sets(card.metrics):
        record = card.metrics[found.split]
        rows.append({
            "split": split_name(t, found.split), "images": number(found.images),
            "fractures": number(found.positives), "auc": with_ci(record, "auc"),
            "average_precision": with_ci(record, "average_precision"),
            "ece": number(record.get("ece")), "brier": number(record.get("brier")),
        })  # fmt: skip
    return rows


def operating_point(record: Mapping[str, Any], point: str) -> Mapping[str, Any] | None:
    """Sensitivity and specificity (and their `_ci95`) a data set records at `point` (low,
    high): `operating_points.<point>` (`training.export`), else `<m>_at_<point>` (older
    exports, `training.evaluate --update-card`); None when it records neither."""
    nested = record.get("operating_points")
    if isinstance(nested, Mapping) and isinstance(nested.get(point), Mapping):
        return cast(Mapping[str, Any], nested[point])
    flat = {f"{m}{ci}": record.get(f"{m}_at_{point}{ci}")
            for m in ("sensitivity", "specificity") for ci in ("", "_ci95")}  # fmt: skip
    return flat if flat["sensitivity"] is not None or flat["specificity"] is not None else None


def operating_rows(card: ModelCard, t: Translate) -> list[dict[str, str]]:
    """Both thresholds, each with the sensitivity and specificity every data set recorded."""
    rows = []
    for point in ("low", "high"):
        threshold = number(getattr(card, f"threshold_{point}"))
        measured = [
            (split_name(t, d.split), found)
            for d in data_sets(card.metrics)
            if (found := operating_point(card.metrics[d.split], point)) is not None
        ]
        for split, record in measured or [(_NONE, {})]:
            rows.append({
                "point": t(f"about.threshold_{point}"), "threshold": threshold, "split": split,
                "sensitivity": with_ci(record, "sensitivity"),
                "specificity": with_ci(record, "specificity"),
            })  # fmt: skip
    return rows


def other_rows(card: ModelCard, t: Translate) -> list[tuple[str, str]]:
    """Everything else the card's metrics record (training run, ONNX check, …), flattened."""
    shown = {d.split for d in data_sets(card.metrics)}
    rows: list[tuple[str, str]] = []

    def walk(path: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{path} › {key}" if path else str(key), inner)
        else:
            rows.append((path, number(value)))

    for key, value in card.metrics.items():
        if key in shown and isinstance(value, Mapping):
            for inner, item in value.items():
                if inner not in _SHOWN:
                    walk(f"{split_name(t, key)} › {inner}", item)
        else:
            walk(split_name(t, key), value)
    return rows


def plots_folder(ctx: ApiContext, card: ModelCard) -> Path | None:
    """The served package's plot folder, if the configured folder still holds that model."""
    package = ctx.settings.model.package
    if not package or not card.trained:
        return None
    folder = Path(package)
    try:
        on_disk = json.loads((folder / CARD_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(on_disk, dict) or on_disk.get("weights_sha256") != card.weights_sha256:
        return None
    return folder / PLOTS_DIR


def plots(ctx: ApiContext, card: ModelCard, t: Translate) -> list[dict[str, str]]:
    folder = plots_folder(ctx, card)
    if folder is None:
        return []
    return [
        {"name": name, "url": f"{PLOT_ROUTE}/{file}", "title": t(f"about.plot.{name}")}
        for name, file in PLOT_FILES.items()
        if (folder / file).is_file()
    ]


def page_context(ctx: ApiContext, card: ModelCard | None, t: Translator) -> dict[str, Any]:
    """What the template shows of `card` (None: no model loaded)."""
    if card is None:
        return {"card": None}
    warnings = [w.message(t, split_name=lambda s: split_name(t, s).lower(), count=t.count)
                for w in assess(card)]  # fmt: skip
    numbers = {
        "low": card.threshold_low, "high": card.threshold_high,
        "temperature": card.temperature, "mean": card.mean, "std": card.std,
    }  # fmt: skip
    local = getattr(t, "numerals", lambda text: text)  # the page's decimal sign
    return {
        "card": card,
        "warnings": [local(text) for text in warnings],
        "thresholds": {key: local(number(value)) for key, value in numbers.items()},
        "evidence_rows": [{k: local(v) for k, v in r.items()} for r in evidence_rows(card, t)],
        "operating_rows": [{k: local(v) for k, v in r.items()} for r in operating_rows(card, t)],
        "other_rows": [(name, local(value)) for name, value in other_rows(card, t)],
        "plots": plots(ctx, card, t),
    }


@router.get("/about-model")
def about_page(request: Request, ctx: Context, auth: PageAuth) -> Response:
    if not auth.is_authorized(request):  # the sign-in form, answered 401 like the worklist
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return login_page(request, error=False, code=status.HTTP_401_UNAUTHORIZED,
                          next_path=target)  # fmt: skip
    chosen = language(request)
    t = translator(chosen)
    context = {
        "t": t,
        "lang": chosen,
        "languages": languages(),
        "lang_links": {code: f"{request.url.path}?lang={code}" for code in LANGUAGES},
        "auth_enabled": auth.enabled,
        "active": "about",
        "untrained": False,  # the page's own, more specific banner replaces the general one
        **page_context(ctx, ctx.card(), t),
    }
    response = TEMPLATES.TemplateResponse(request, "about_model.html", context)
    response.headers["Cache-Control"] = "no-store"
    remember_language(request, response, chosen)
    return response


@router.get(PLOT_ROUTE + "/{name}")
def plot(name: str, request: Request, ctx: Context, auth: PageAuth) -> Response:
    """A validation plot of the served package (same authentication as the page)."""
    auth(request)
    card = ctx.card()
    folder = plots_folder(ctx, card) if card is not None else None
    if folder is None or name not in PLOT_FILES.values() or not (folder / name).is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such plot for the served model")
    return FileResponse(folder / name, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"})  # fmt: skip
