"""No English reaches a Ukrainian page: every page (worklist, about, analyze, sign-in, API docs,
error pages) rendered in Ukrainian over real data — studies positive, indeterminate, negative,
failed and skipped; the demo model; analyses refused and skipped with their reasons — and the
texts the analysis page's script shows (its catalogue and the API's `detail`, `reason_text`,
`label_text`, `display_text`). Visible text only; parts marked `lang="en"` (the "English"
switch, the Swagger reference) are English on purpose.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from dicomnode.config import Settings
from dicomnode.http.app import ApiContext, create_app
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.spool import Spool
from dicomnode.store.tables import JobState
from tests.support.data import RG3_UNCR, TINY_ARCH, copy_with_new_uids, ct_small, testdata
from tests.support.jobs import claim

TOKEN = "uk-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Accept": "text/html"}
#: Latin-script words a Ukrainian page may show: DICOM and file-format terms, units, codes,
#: product names, and the names of things (model, patient) that are data, not interface.
ALLOWED = {
    "dicom", "dicomnode", "cr", "dx", "ct", "rg", "sop", "uid", "png", "jpeg", "bmp", "tiff",
    "zip", "api", "xlsx", "sr", "sc", "json", "voi", "lut", "http", "id", "sha", "max", "px",
    "swagger", "ui", "multipart", "min_image_size", "file", "send", "true", "authorization",
    "fracture", "triage",  # the demo model's name, "dicomnode fracture triage"
    "doe", "jane", "hand",  # the test patient and body part (a DICOM defined term)
    "pacs", "destinations", "enter",  # a term, the config table `[[destinations]]`, a key
    "auc", "roc",  # the metrics' international abbreviations
}  # fmt: skip


class _VisibleText(HTMLParser):
    """Text a reader sees, outside scripts, styles and subtrees marked with another language."""

    VOID = frozenset({"meta", "link", "input", "img", "br", "hr", "source"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, bool]] = []
        self.texts: list[str] = []
        self.language = ""  # the page's: <html lang>

    def _hidden(self) -> bool:
        return any(hidden for _, hidden in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.VOID:
            return
        lang = dict(attrs).get("lang")
        if tag == "html":
            self.language = lang or ""
        hidden = tag in ("script", "style") or (lang is not None and lang != self.language)
        self.stack.append((tag, hidden))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._hidden() and data.strip():
            self.texts.append(data.strip())


def english_words(text: str) -> set[str]:
    """Latin-script words of `text` beyond the allow-list; codes (with digits, `_` or an inner
    `.`: `efficientnet_b4`, `api.token`, `report.xlsx`) are identifiers, not words."""
    found = set()
    for token in re.split(r"[\s,;:()«»\"“”·–—/=]+", text):
        if re.search(r"[0-9_]", token) or "." in token.strip(".!?"):
            continue
        for word in re.findall(r"[A-Za-z][A-Za-z']+", token):
            if word.lower() not in ALLOWED:
                found.add(word)
    return found


def page_english(html: str) -> set[str]:
    parser = _VisibleText()
    parser.feed(html)
    assert parser.texts, "no visible text"
    return english_words(" ".join(parser.texts))


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.demo(architecture=TINY_ARCH, device="cpu")


def _study(jobs: Jobs, n: int, *, state: JobState, p: float | None = None,
           reason: str | None = None, modality: str = "CR") -> None:  # fmt: skip
    job_id, _ = jobs.enqueue(
        Received(
            sop_instance_uid=f"9.{n}.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
            study_instance_uid=f"9.{n}", series_instance_uid=f"9.{n}.0", modality=modality,
            body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="x",
            study={"patient_name": "Doe^Jane", "patient_id": "PID-7", "accession_number": "A-9",
                   "study_date": "20240105", "study_time": "101500",
                   "study_description": "Кисть"},
        )
    )  # fmt: skip
    job = claim(jobs, owner="test", lease_seconds=60)
    assert job is not None and job.id == job_id
    outcome = None if p is None else "positive" if p >= 0.7 else "negative" if p < 0.3 else "doubt"
    jobs.finish(job_id, state=state, probability=p, outcome=outcome, reason=reason)


@pytest.fixture
def client(tmp_path: Path, classifier: Classifier) -> Iterator[TestClient]:
    settings = Settings.model_validate({"node": {"data_dir": str(tmp_path)},
                                        "api": {"token": TOKEN}})  # fmt: skip
    engine = make_engine(f"sqlite:///{tmp_path / 'dicomnode.db'}")
    jobs = Jobs(engine)
    _study(jobs, 1, state=JobState.CLASSIFIED, p=0.9)
    _study(jobs, 2, state=JobState.CLASSIFIED, p=0.5)
    _study(jobs, 3, state=JobState.CLASSIFIED, p=0.1)
    _study(jobs, 4, state=JobState.FAILED, reason="pixel data could not be decoded (JPEG 2000)")
    _study(jobs, 5, state=JobState.SKIPPED, reason="modality CT is not a radiograph",
           modality="CT")  # fmt: skip
    ctx = ApiContext(settings=settings, jobs=jobs, metrics=Metrics(),
                     card=lambda: classifier.card, readiness=dict,
                     spool=Spool(tmp_path / "spool"), classifier=classifier)  # fmt: skip
    yield TestClient(create_app(ctx))
    engine.dispose()


def _zip(tmp_path: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.TXT", "not a DICOM file")
        archive.write(ct_small(), "CT1")
        archive.write(copy_with_new_uids(testdata(RG3_UNCR), tmp_path / "cr.dcm"), "CR1")
    return buffer.getvalue()


def test_no_english_reaches_a_ukrainian_page(client: TestClient, tmp_path: Path):
    # The analyses first: the page's script shows these texts.
    refused = client.post("/api/analyze?lang=uk", headers=AUTH,
                          files={"file": ("ct.dcm", ct_small().read_bytes())})  # fmt: skip
    assert refused.status_code == 422 and refused.json()["reason_code"] == "modality"
    assert refused.json()["reason"] == "modality CT is not a radiograph"  # English in the API
    study = client.post("/api/analyze-study?lang=uk", headers=AUTH,
                        files={"file": ("study.zip", _zip(tmp_path))})  # fmt: skip
    assert study.status_code == 200, study.text
    result = study.json()
    reasons = {i["entry"]: i.get("reason_code") for i in result["images"]}
    assert reasons == {"README.TXT": "not_dicom", "CT1": "modality", "CR1": None}
    shown = [refused.json()["detail"], result["disclaimer"], result["model"]["display_text"]]
    shown += [i.get(k, "") for i in result["images"] for k in ("reason_text", "label_text")]
    shown += [s.get("label_text", "") for s in result["studies"]]
    counted = [s["images_text"] for s in result["studies"]]  # "з 1 зображення": genitive
    assert counted and all(re.fullmatch(r"класифіковано [01] з 1 зображення", c) for c in counted)
    shown += counted
    assert english_words(" ".join(shown)) == set(), shown

    pages = {
        "worklist": "/?lang=uk",
        "worklist, every outcome": "/?lang=uk&outcome=doubt",
        "worklist, bad filter": "/?lang=uk&date_from=2024-13-45",
        "about": "/about-model?lang=uk",
        "analyze": "/analyze?lang=uk",
        "analyze, a result": f"/analyze?lang=uk&id={result['id']}",
        "docs": "/docs?lang=uk",
        "no such page": "/no-such-page?lang=uk",
    }
    for name, url in pages.items():
        response = client.get(url, headers=AUTH)
        assert response.status_code in (200, 404, 422), (name, response.status_code)
        assert 'lang="uk"' in response.text, name
        assert page_english(response.text) == set(), name
    worklist = client.get("/?lang=uk", headers=AUTH).text
    assert "невизначено" in worklist
    assert "<span>5 січ. 2024\u202fр.</span> <span>10:15</span>" in worklist  # Babel
    assert '<td class="probability">0,90</td>' in worklist  # the locale's decimal sign
    assert '<td class="probability">0.90</td>' in client.get("/?lang=en", headers=AUTH).text
    script = re.search(r'<script id="messages" type="application/json">(.*?)</script>',
                       client.get("/analyze?lang=uk", headers=AUTH).text, re.S)  # fmt: skip
    assert script is not None
    script_texts = " ".join(json.loads(script.group(1)).values())
    assert english_words(re.sub(r"\{\w+\}", " ", script_texts)) == set()  # not placeholders

    signed_out = TestClient(client.app)
    login = signed_out.get("/?lang=uk", headers={"Accept": "text/html"})
    assert login.status_code == 401 and 'id="login"' in login.text
    assert page_english(login.text) == set()
    wrong = signed_out.post("/login?lang=uk", data={"token": "wrong", "next": "/"},
                            headers={"Origin": "http://testserver"})  # fmt: skip
    assert 'id="login-error"' in wrong.text and page_english(wrong.text) == set()


def test_the_api_keeps_english_reasons_with_their_codes(client: TestClient):
    bearer = {"Authorization": AUTH["Authorization"]}
    jobs = {j["reason"]: j["reason_code"]
            for j in client.get("/api/jobs", headers=bearer).json()["jobs"]}  # fmt: skip
    assert jobs["modality CT is not a radiograph"] == "modality"
    assert jobs["pixel data could not be decoded (JPEG 2000)"] == "undecodable"
    assert jobs[None] is None


def test_the_english_pages_stay_english(client: TestClient):
    """The check above finds English: the same pages in English are full of it."""
    for url in ("/?lang=en", "/about-model?lang=en", "/no-such-page?lang=en"):
        response = client.get(url, headers=AUTH)
        assert len(page_english(response.text)) > 3, url
    missing = client.get("/no-such-page?lang=en", headers=AUTH)
    assert missing.status_code == 404 and "There is no such page" in missing.text
    api = client.get("/no-such-page", headers={"Authorization": AUTH["Authorization"]})
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}  # API clients
