"""The About page, the plots of the served package and `GET /api/model` over a real app
(FastAPI TestClient): tables with 3 significant digits and intervals, the evidence warnings
with their numbers in both languages, the plots behind the page's authentication."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.http.i18n import MESSAGES
from dicomnode.metrics import Metrics
from dicomnode.model.card import CARD_FILE, PLOT_FILES, PLOTS_DIR, ModelCard
from dicomnode.model.evidence import ENGLISH
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs

TOKEN = "about-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: The package of issue 19, as `training.export` records it.
SMALL = ModelCard(
    name="site model", version="v9", architecture="efficientnet_b4", input_size=384,
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), trained=True,
    threshold_low=0.30000000000000004, threshold_high=0.7123456789012345,
    temperature=1.234567, weights_sha256="ab" * 32,
    metrics={
        "validation": {"images": 9, "fracture": 3, "epoch": 4, "auc": 0.8333333,
                       "auc_ci95": [0.333333, 1.0], "ece": 0.1234567, "brier": 0.2,
                       "operating_points": {  # as training.export writes them
                           "low": {"threshold": 0.3, "sensitivity": 1.0,
                                   "sensitivity_ci95": [0.4385, 1.0], "specificity": 0.5,
                                   "specificity_ci95": [0.1876, 0.8124]},
                           "high": {"threshold": 0.71, "sensitivity": 0.6666667,
                                    "sensitivity_ci95": [0.2076, 0.9385],
                                    "specificity": 1.0, "specificity_ci95": [0.6097, 1.0]}}},
        "test": {"images": 820, "fracture": 144, "auc": 0.92, "auc_ci95": [0.894, 0.944],
                 "average_precision": 0.81, "sensitivity_at_low": 0.965,  # evaluate's keys
                 "specificity_at_low": 0.4, "sensitivity_at_high": 0.7,
                 "specificity_at_high": 0.951},
        "training": {"best_epoch": 4, "epochs_run": 9, "init": "random",
                     "split": {"counts": {"val": {"fracture": 3, "normal": 6}}}},
    },
    limitations=("Operating points were fitted on a validation split.",),
)  # fmt: skip


def _package(folder: Path, card: ModelCard) -> Path:
    """The files of a package the page reads: the card and the plots (weights not needed)."""
    (folder / PLOTS_DIR).mkdir(parents=True)
    (folder / CARD_FILE).write_text(json.dumps(card.to_json()))
    for i, name in enumerate(PLOT_FILES.values()):
        Image.new("RGB", (64, 64), (40 * i, 90, 160)).save(folder / PLOTS_DIR / name)
    return folder


def _client(tmp_path: Path, card: ModelCard, *, package: Path | None = None) -> TestClient:
    settings = Settings.model_validate(
        {"api": {"token": TOKEN}, "model": {"package": str(package or "")}}
    )
    ctx = ApiContext(settings=settings, jobs=Jobs(make_engine(f"sqlite:///{tmp_path / 'db'}")),
                     metrics=Metrics(), card=lambda: card, readiness=dict)  # fmt: skip
    return TestClient(create_app(ctx))


def _cells(html: str, table_id: str) -> list[list[str]]:
    table = re.search(rf'<table id="{table_id}".*?</table>', html, re.S)
    assert table is not None, table_id
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(0), re.S)
    return [[c.strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)] for r in rows]


def test_api_model_lists_the_warnings_with_the_numbers(tmp_path: Path) -> None:
    body = _client(tmp_path, SMALL).get("/api/model", headers=AUTH).json()
    assert body["warnings"] == [
        "validation: 9 images (3 fractures); fewer than 50 fractures; "
        "AUC 0.833, 95 % CI 0.333–1.00 is wider than 0.20"
    ]
    demo = dataclasses.replace(SMALL, trained=False, metrics={})
    body = _client(tmp_path, demo).get("/api/model", headers=AUTH).json()
    assert body["untrained_demo"] and body["warnings"] == [
        "untrained demo model: no validation evidence at all"
    ]


def test_about_page_shows_tables_warnings_and_plots(tmp_path: Path) -> None:
    client = _client(tmp_path, SMALL, package=_package(tmp_path / "pkg", SMALL))
    html = client.get("/about-model?lang=en", headers=AUTH).text
    assert "{&#39;" not in html and "{'" not in html  # no raw Python dict any more
    assert "0.30000000000000004" not in html and "0.7123456789012345" not in html
    assert _cells(html, "card-metrics") == [
        ["Data set", "Images", "Fractures", "ROC AUC (95 % CI)", "Average precision",
         "Calibration error (ECE)", "Brier score"],
        ["Validation", "9", "3", "0.833 (0.333–1.00)", "–", "0.123", "0.200"],
        ["Test", "820", "144", "0.920 (0.894–0.944)", "0.810", "–", "–"],
    ]  # fmt: skip
    points = [row[1:] for row in _cells(html, "card-operating-points")[1:]]
    assert points == [
        ["0.300", "Validation", "1.00 (0.439–1.00)", "0.500 (0.188–0.812)"],
        ["0.300", "Test", "0.965", "0.400"],
        ["0.712", "Validation", "0.667 (0.208–0.939)", "1.00 (0.610–1.00)"],
        ["0.712", "Test", "0.700", "0.951"],
    ]
    other = dict(map(tuple, _cells(html, "card-other")))  # type: ignore[arg-type]
    assert other["Validation › epoch"] == "4"
    assert other["Training › split › counts › val › fracture"] == "3"
    warning = re.search(r'<li class="evidence-warning">(.*?)</li>', html)
    assert warning is not None and warning.group(1) == (
        "validation: 9 images (3 fractures); fewer than 50 fractures; "
        "AUC 0.833, 95 % CI 0.333–1.00 is wider than 0.20"
    )
    assert "Operating points were fitted" in html and 'id="card-intended-use"' in html
    for name, file in PLOT_FILES.items():
        assert f'<img id="plot-{name}" src="/about-model/plots/{file}"' in html
    png = client.get("/about-model/plots/roc.png", headers=AUTH)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)

    uk = client.get("/about-model?lang=uk", headers=AUTH).text
    assert "валідація: 9 зображень (3 переломи); менше ніж 50 переломів; " in uk  # few: 2–4
    assert "95 % ДІ 0,333–1,00 ширший за 0,20" in uk and "Слабкі докази валідації" in uk


def test_plots_need_the_pages_authentication_and_the_served_model(tmp_path: Path) -> None:
    package = _package(tmp_path / "pkg", SMALL)
    client = _client(tmp_path, SMALL, package=package)
    assert client.get("/about-model/plots/roc.png").status_code == 401
    assert client.get("/about-model").status_code == 401  # the sign-in form
    for name in ("model.json", "..%2Fmodel.json", "weights.safetensors", "other.png"):
        assert client.get(f"/about-model/plots/{name}", headers=AUTH).status_code == 404
    # The folder now holds another model (other weights): its plots are not this model's.
    replaced = dataclasses.replace(SMALL, weights_sha256="cd" * 32)
    (package / CARD_FILE).write_text(json.dumps(replaced.to_json()))
    assert client.get("/about-model/plots/roc.png", headers=AUTH).status_code == 404
    assert "plot-roc" not in client.get("/about-model", headers=AUTH).text


def test_the_demo_page_is_labelled_and_has_no_plots(tmp_path: Path) -> None:
    demo = dataclasses.replace(SMALL, trained=False, metrics={}, name="dicomnode demo")
    html = _client(tmp_path, demo).get("/about-model?lang=en", headers=AUTH).text
    assert 'id="about-untrained"' in html and "UNTRAINED DEMO" in html
    assert "untrained demo model: no validation evidence at all" in html
    assert 'id="card-plots"' not in html and "No metrics recorded." in html


@pytest.mark.parametrize("language", sorted(MESSAGES))
def test_every_language_has_the_evidence_messages(language: str) -> None:
    keys = {k for k in MESSAGES["en"] if k.startswith(("evidence.", "about."))}
    assert keys <= set(MESSAGES[language])
    for key, text in ENGLISH.items():  # the API's English is the page's English
        assert MESSAGES["en"][key] == text
        fields = set(re.findall(r"\{(\w+)\}", text))
        assert set(re.findall(r"\{(\w+)\}", MESSAGES[language][key])) == fields
