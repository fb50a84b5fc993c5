"""With no [[destinations]] (the shipped configuration), results go nowhere: /readyz says so in
its detail (still ready) and every page carries a banner, in the page's language."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dicomnode.config import NO_DESTINATION_WARNING, Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.http.i18n import MESSAGES
from dicomnode.metrics import Metrics
from dicomnode.model.card import ModelCard
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CARD = ModelCard(name="test model", version="t-1", architecture="test_efficientnet",
                 input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, trained=True)  # fmt: skip
PACS = {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}


def _client(tmp_path, *, destinations: list[dict[str, object]]) -> TestClient:
    settings = Settings.model_validate({"api": {"token": TOKEN}, "destinations": destinations})
    jobs = Jobs(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    ctx = ApiContext(settings=settings, jobs=jobs, metrics=Metrics(), card=lambda: CARD,
                     readiness=lambda: {"database": True})  # fmt: skip
    return TestClient(create_app(ctx))


def test_readyz_is_ready_but_says_results_go_nowhere(tmp_path):
    body = _client(tmp_path, destinations=[]).get("/readyz").json()
    assert body["ready"] is True and body["warnings"] == [NO_DESTINATION_WARNING]
    assert "[[destinations]]" in NO_DESTINATION_WARNING
    configured = _client(tmp_path, destinations=[PACS]).get("/readyz").json()
    assert configured == {"ready": True, "checks": {"database": True}, "warnings": []}


@pytest.mark.parametrize("path", ["/", "/analyze", "/about-model"])
def test_every_page_shows_the_no_destination_banner_in_its_language(tmp_path, path):
    client = _client(tmp_path, destinations=[])
    for lang in ("en", "uk"):
        html = client.get(f"{path}?lang={lang}", headers=AUTH).text
        assert 'id="no-destination-banner"' in html
        assert MESSAGES[lang]["no_destination_banner"] in html
    html = _client(tmp_path, destinations=[PACS]).get(path, headers=AUTH).text
    assert 'id="no-destination-banner"' not in html and "<header" in html
