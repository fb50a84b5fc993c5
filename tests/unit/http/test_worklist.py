"""The worklist query and the status API over a real SQLite database (FastAPI TestClient).

Studies are put into the database through the same `Jobs` calls the node uses (enqueue,
claim, finish, record_report, add_result, delivery_*), so the states are the real ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Route

from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.auth import SESSION_COOKIE
from dicomnode.http.context import ApiContext
from dicomnode.http.i18n import MESSAGES, choose_language
from dicomnode.metrics import Metrics
from dicomnode.model.card import ModelCard
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.spool import Spool
from dicomnode.store.tables import JobState, ResultKind
from dicomnode.store.worklist import FilterError, WorklistFilters, query_worklist
from tests.support.api_client import app_routes
from tests.support.jobs import claim

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CARD = ModelCard(name="test model", version="t-1", architecture="test_efficientnet",
                 input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, trained=False)  # fmt: skip
EXEMPT = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/login")}


def _outcome(p: float) -> str:
    return "positive" if p >= 0.7 else "negative" if p < 0.3 else "doubt"


@dataclass
class Db:
    jobs: Jobs
    n: int = 0

    def image(self, study: str, p: float | None, *, state: JobState = JobState.CLASSIFIED,
              modality: str = "CR", study_date: str = "20240105") -> int:  # fmt: skip
        """One received image of `study`, taken to `state` (queued ones must come last)."""
        self.n += 1
        job_id, _ = self.jobs.enqueue(
            Received(
                sop_instance_uid=f"{study}.{self.n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                study_instance_uid=study, series_instance_uid=f"{study}.0", modality=modality,
                body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="x",
                study={"patient_name": "Doe^Jane", "patient_id": "PID-7",
                       "accession_number": "ACC-9", "study_date": study_date,
                       "study_time": "101500", "study_description": f"Study {study}"},
            )
        )  # fmt: skip
        if state == JobState.QUEUED:
            return job_id
        job = claim(self.jobs, owner="test", lease_seconds=60)
        assert job is not None and job.id == job_id
        if state != JobState.PROCESSING:
            self.jobs.finish(job_id, state=state, probability=p,
                             outcome=_outcome(p) if p is not None else None)  # fmt: skip
        return job_id

    def report(self, study: str, *, delivered: bool | None = None) -> None:
        """Record the study report and an SC per image; deliveries: None pending, True
        delivered, False given up."""
        classified = self.jobs.classified_jobs(study)
        top = max(j.probability or 0 for j in classified)
        self.jobs.record_report(study_instance_uid=study, version=1, job_count=len(classified),
                                outcome=_outcome(top), max_probability=top)  # fmt: skip
        for job in classified:
            result = self.jobs.add_result(
                kind=ResultKind.SC, sop_instance_uid=f"{job.sop_instance_uid}.99",
                study_instance_uid=study, path="out/none.dcm", destinations=["pacs"],
                job_id=job.id,
            )  # fmt: skip
            [delivery] = self.jobs.deliveries_for([result.id])
            if delivered is True:
                self.jobs.delivery_succeeded(delivery.id, status=0)
            elif delivered is False:
                self.jobs.delivery_failed(delivery.id, status=0xA700, error="x", retry_at=None)


@pytest.fixture
def db(tmp_path) -> Db:
    return Db(Jobs(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")))


@pytest.fixture
def filled(db: Db) -> Db:
    """Studies named by their expected place; inserted oldest first in this order."""
    db.image("9.1", 0.10)  # A negative, oldest
    db.report("9.1", delivered=True)
    db.image("9.2", 0.80)  # B positive 0.8 (and a negative image)
    db.image("9.2", 0.20)
    db.report("9.2")
    db.image("9.3", 0.50, modality="DX", study_date="20230301")  # C doubt, older
    db.report("9.3", delivered=False)
    db.image("9.4", 0.95)  # D positive 0.95, not yet reported
    db.image("9.5", 0.20)  # E negative, newer than A (higher probability)
    db.image("9.5", None, state=JobState.FAILED)
    db.report("9.5")
    db.image("9.6", 0.80, study_date="20240201")  # F positive 0.8, newer than B
    db.report("9.6", delivered=True)
    db.image("9.7", 0.60)  # G doubt, newer than C (higher probability)
    db.report("9.7", delivered=True)
    db.image("9.8", None, state=JobState.SKIPPED, modality="CT")  # all skipped: not listed
    db.image("9.9", None, state=JobState.PROCESSING)  # I: being classified
    db.image("9.10", None, state=JobState.QUEUED)  # H: waiting
    return db


EXPECTED_ORDER = ["9.4", "9.2", "9.6", "9.3", "9.7", "9.1", "9.5", "9.9", "9.10"]


def _uids(page: Any) -> list[str]:
    return [r.study_instance_uid for r in page.rows]


def test_reading_order_positive_by_probability_then_doubt_negative_oldest_first(filled):
    page = query_worklist(filled.jobs.engine, WorklistFilters())
    assert _uids(page) == EXPECTED_ORDER
    assert page.total == len(EXPECTED_ORDER)
    by_uid = {r.study_instance_uid: r for r in page.rows}
    assert by_uid["9.2"].images == 2 and by_uid["9.2"].max_probability == pytest.approx(0.8)
    assert [str(by_uid[u].outcome) for u in ("9.4", "9.3", "9.1")] == [
        "positive", "doubt", "negative"
    ]  # fmt: skip
    assert by_uid["9.10"].outcome is None and by_uid["9.9"].outcome is None


def test_study_states_from_jobs_report_and_deliveries(filled):
    states = {r.study_instance_uid: str(r.state) for r in
              query_worklist(filled.jobs.engine, WorklistFilters()).rows}  # fmt: skip
    assert states == {
        "9.1": "delivered", "9.2": "reported", "9.3": "failed", "9.4": "processing",
        "9.5": "failed", "9.6": "delivered", "9.7": "delivered", "9.9": "processing",
        "9.10": "waiting",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (WorklistFilters(outcomes=("positive",)), ["9.4", "9.2", "9.6"]),
        (WorklistFilters(outcomes=("doubt", "negative")), ["9.3", "9.7", "9.1", "9.5"]),
        (WorklistFilters(states=("failed",)), ["9.3", "9.5"]),
        (WorklistFilters(states=("waiting", "processing")), ["9.4", "9.9", "9.10"]),
        (WorklistFilters(modality="DX"), ["9.3"]),
        (WorklistFilters(modality="D"), []),
        (WorklistFilters(date_from=date(2024, 1, 6)), ["9.6"]),
        (WorklistFilters(date_to=date(2023, 12, 31)), ["9.3"]),
        (WorklistFilters(outcomes=("positive",), date_from=date(2024, 1, 5),
                         date_to=date(2024, 1, 5)), ["9.4", "9.2"]),
        (WorklistFilters(limit=3, offset=3), ["9.3", "9.7", "9.1"]),
        (WorklistFilters(limit=4, offset=8), ["9.10"]),
    ],
)  # fmt: skip
def test_filters_and_pagination(filled, filters, expected):
    page = query_worklist(filled.jobs.engine, filters)
    assert _uids(page) == expected
    if filters.limit == 50:
        assert page.total == len(expected)
    else:
        assert page.total == len(EXPECTED_ORDER)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"outcome": ["maybe"]}, "outcome must be one of positive, doubt, negative"),
        ({"state": ["lost"]}, "state must be one of waiting"),
        ({"date_from": "2024-13-01"}, "date_from must be a date"),
        ({"date_from": "2024-02-01", "date_to": "2024-01-01"}, "must not be after"),
        ({"limit": "0"}, "limit must be between 1 and 500"),
        ({"offset": "x"}, "offset must be a whole number"),
        ({"modality": "C;R"}, "modality must be a DICOM modality code"),
    ],
)
def test_bad_filters_say_what_is_wrong(kwargs, message):
    with pytest.raises(FilterError, match=re.escape(message)):
        WorklistFilters.from_strings(**kwargs)


# --- the HTTP API -------------------------------------------------------------------------


def _client(db: Db, tmp_path, **api: Any) -> TestClient:
    settings = Settings.model_validate({"api": {"token": TOKEN, **api}})
    ctx = ApiContext(settings=settings, jobs=db.jobs, metrics=Metrics(), card=lambda: CARD,
                     readiness=lambda: {"database": True},
                     spool=Spool(tmp_path / "spool"))  # fmt: skip
    return TestClient(create_app(ctx))


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def test_every_route_but_health_and_login_needs_the_token(db, tmp_path):
    client = _client(db, tmp_path)
    checked = []
    for route in app_routes(client.app):
        if not isinstance(route, APIRoute | Route):
            continue
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            path = _concrete(route.path)
            if (method, route.path) in EXEMPT:
                assert client.request(method, path).status_code in (200, 503)
                continue
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers)
            checked.append((method, route.path))
    must = {"/api/worklist", "/api/studies/{study_instance_uid}", "/api/jobs",
            "/api/jobs/{job_id}/retry", "/api/model", "/metrics", "/openapi.json", "/",
            "/api/results/{sop_instance_uid}/thumbnail.png", "/static/{name}", "/docs"}  # fmt: skip
    assert must <= {path for _, path in checked}
    assert ("POST", "/login") in checked  # a wrong (here: no) token is refused too


def test_worklist_endpoint_order_links_identifiers_and_pagination(filled, tmp_path):
    client = _client(filled, tmp_path, viewer_url="http://viewer/?study={study_instance_uid}")
    body = client.get("/api/worklist", headers=AUTH).json()
    assert [s["study_instance_uid"] for s in body["studies"]] == EXPECTED_ORDER
    top = body["studies"][0]
    assert top["outcome"] == "positive" and top["state"] == "processing"
    assert top["study_date"] == "2024-01-05" and top["study_time"] == "10:15:00"
    assert top["modalities"] == ["CR"] and top["body_part"] == "HAND" and top["images"] == 1
    assert top["patient"] == {"name": "Doe^Jane", "id": "PID-7", "accession_number": "ACC-9"}
    assert top["links"]["viewer"] == "http://viewer/?study=9.4"
    assert top["links"]["study"] == "/api/studies/9.4"
    second = body["studies"][1]
    assert second["links"]["thumbnails"] == [
        "/api/results/9.2.2.99/thumbnail.png", "/api/results/9.2.3.99/thumbnail.png"
    ]  # fmt: skip
    page = client.get("/api/worklist?limit=2&offset=2&outcome=positive&outcome=doubt",
                      headers=AUTH).json()  # fmt: skip
    assert [s["study_instance_uid"] for s in page["studies"]] == ["9.6", "9.3"]
    assert (page["total"], page["limit"], page["offset"]) == (5, 2, 2)
    study = client.get("/api/studies/9.2", headers=AUTH).json()
    assert [r["thumbnail"] for r in study["results"]] == second["links"]["thumbnails"]
    assert len(study["images"]) == 2


def test_patient_identifiers_only_when_configured(filled, tmp_path):
    client = _client(filled, tmp_path, show_patient_identifiers=False)
    body = client.get("/api/worklist", headers=AUTH).json()
    assert all("patient" not in s for s in body["studies"])
    assert "Doe^Jane" not in client.get("/", headers=AUTH).text
    assert "Doe^Jane" in _client(filled, tmp_path).get("/", headers=AUTH).text
    open_ctx = ApiContext(settings=Settings(), jobs=filled.jobs, metrics=Metrics(),
                          card=lambda: CARD, readiness=dict)  # fmt: skip
    without_token = TestClient(create_app(open_ctx)).get("/api/worklist").json()
    assert all("patient" not in s for s in without_token["studies"])


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("outcome=maybe", "positive"),
        ("state=lost", "waiting"),
        ("date_from=yesterday", "date"),
        ("date_from=2024-02-01&date_to=2024-01-01", "date_from must not be after date_to"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("offset=-1", "offset"),
        ("modality=C%3BR", "modality must be a DICOM modality code"),
    ],
)
def test_bad_filters_give_422_with_a_message(db, tmp_path, query, needle):
    response = _client(db, tmp_path).get(f"/api/worklist?{query}", headers=AUTH)
    assert response.status_code == 422
    assert needle in str(response.json()["detail"])


def test_unknown_things_give_404_and_retry_only_failed_jobs(filled, tmp_path):
    client = _client(filled, tmp_path)
    for path in ("/api/studies/1.2.3.404", "/api/jobs/99999",
                 "/api/results/1.2.3.404/thumbnail.png", "/static/nothing.js"):  # fmt: skip
        response = client.get(path, headers=AUTH)
        assert response.status_code == 404 and response.json()["detail"], path
    assert client.post("/api/jobs/99999/retry", headers=AUTH).status_code == 404
    gone = client.get("/api/results/9.1.1.99/thumbnail.png", headers=AUTH)  # file deleted
    assert gone.status_code == 404 and gone.json()["detail"] == "secondary capture no longer stored"
    failed = client.get("/api/jobs?state=failed", headers=AUTH).json()["jobs"]
    assert [j["study_instance_uid"] for j in failed] == ["9.5"]
    classified = client.get("/api/jobs?state=classified&study_instance_uid=9.2",
                            headers=AUTH).json()["jobs"]  # fmt: skip
    assert len(classified) == 2
    assert client.post(f"/api/jobs/{classified[0]['id']}/retry", headers=AUTH).status_code == 409
    assert client.post(f"/api/jobs/{failed[0]['id']}/retry", headers=AUTH).json()["state"] == (
        "queued"
    )
    assert client.get(f"/api/jobs/{failed[0]['id']}", headers=AUTH).json()["state"] == "queued"


def test_schema_and_model_card(db, tmp_path):
    client = _client(db, tmp_path)
    schema = client.get("/openapi.json", headers=AUTH).json()
    assert {"/api/worklist", "/api/jobs", "/api/jobs/{job_id}/retry", "/api/model",
            "/api/results/{sop_instance_uid}/thumbnail.png"} <= set(schema["paths"])  # fmt: skip
    params = {p["name"] for p in schema["paths"]["/api/worklist"]["get"]["parameters"]}
    assert params == {"outcome", "state", "modality", "date_from", "date_to", "limit", "offset",
                      "sort", "order", "served_only"}  # fmt: skip
    model = client.get("/api/model", headers=AUTH).json()
    assert model["untrained_demo"] is True and "UNTRAINED DEMO" in model["display_name"]


# --- the page -----------------------------------------------------------------------------


def test_login_sets_a_session_cookie_that_reads_but_cannot_change(filled, tmp_path):
    client = _client(filled, tmp_path)
    first = client.get("/?outcome=positive")
    assert first.status_code == 401 and 'id="login"' in first.text
    assert 'value="/?outcome=positive"' in first.text
    wrong = client.post("/login", data={"token": "nope"}, follow_redirects=False)
    assert wrong.status_code == 401 and 'id="login-error"' in wrong.text
    assert SESSION_COOKIE not in client.cookies
    ok = client.post("/login", data={"token": TOKEN, "next": "/?outcome=positive"},
                     follow_redirects=False)  # fmt: skip
    assert ok.status_code == 303 and ok.headers["location"] == "/?outcome=positive"
    assert TOKEN not in ok.headers["set-cookie"] and "httponly" in ok.headers["set-cookie"].lower()
    assert "samesite=strict" in ok.headers["set-cookie"].lower()
    page = client.get("/?outcome=positive")
    assert page.status_code == 200 and 'data-study-uid="9.4"' in page.text
    assert 'data-study-uid="9.1"' not in page.text  # the filter applied
    assert client.get("/api/worklist").status_code == 200
    assert client.get("/static/worklist.js").status_code == 200
    failed = client.get("/api/jobs?state=failed").json()["jobs"][0]["id"]
    same_origin = {"Origin": "http://testserver"}  # what a browser sends from the page
    # needs the bearer (from another origin the cookie is refused before that: test_guard.py)
    assert client.post(f"/api/jobs/{failed}/retry", headers=same_origin).status_code == 401
    evil = client.post("/login", data={"token": TOKEN, "next": "//evil.example/"},
                       headers=same_origin, follow_redirects=False)  # fmt: skip
    assert evil.headers["location"] == "/"
    out = client.post("/logout", headers=same_origin, follow_redirects=False)
    assert out.status_code == 303
    client.cookies.clear()
    assert client.get("/").status_code == 401


def test_page_shows_the_notice_banner_colours_and_language(filled, tmp_path):
    client = _client(filled, tmp_path)
    page = client.get("/", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert MESSAGES["en"]["notice"] in html and 'id="untrained-banner"' in html
    rows = re.findall(r'<tr class="study outcome-(\w+)" data-study-uid="([\d.]+)"', html)
    assert [uid for _, uid in rows] == EXPECTED_ORDER
    assert rows[0][0] == "positive" and rows[3][0] == "doubt" and rows[-1][0] == "none"
    assert html.count('src="/api/results/') == 7  # an SC thumbnail per reported image
    uk = client.get("/", headers={**AUTH, "Accept-Language": "uk-UA,uk;q=0.9,en;q=0.5"})
    assert MESSAGES["uk"]["notice"] in uk.text and 'lang="uk"' in uk.text
    switched = client.get("/?lang=uk", headers=AUTH)
    assert MESSAGES["uk"]["title"] in switched.text
    assert client.cookies.get("dicomnode_lang") == "uk"
    assert MESSAGES["uk"]["title"] in client.get("/", headers=AUTH).text  # remembered
    fragment = client.get("/?fragment=rows&state=waiting", headers=AUTH).text
    assert fragment.lstrip().startswith('<section id="results"')
    assert re.findall(r'data-study-uid="([\d.]+)"', fragment) == ["9.10"]
    bad = client.get("/?date_from=2024-02-31", headers=AUTH)
    assert bad.status_code == 422 and 'id="filter-error"' in bad.text


def test_trained_model_has_no_banner(db, tmp_path):
    import dataclasses

    settings = Settings.model_validate({"api": {"token": TOKEN}})
    trained = dataclasses.replace(CARD, trained=True)
    ctx = ApiContext(settings=settings, jobs=db.jobs, metrics=Metrics(), card=lambda: trained,
                     readiness=dict)  # fmt: skip
    html = TestClient(create_app(ctx)).get("/", headers=AUTH).text
    assert 'id="untrained-banner"' not in html and MESSAGES["en"]["notice"] in html


def test_catalogs_are_complete_and_language_choice():
    assert set(MESSAGES["en"]) == set(MESSAGES["uk"])
    assert all(MESSAGES["uk"][k] for k in MESSAGES["uk"])
    choose = choose_language
    assert choose(query=None, cookie=None, accept_language="") == "en"
    assert choose(query=None, cookie=None, accept_language="de-DE,uk;q=0.8,en;q=0.7") == "uk"
    assert choose(query=None, cookie=None, accept_language="uk;q=0,en") == "en"
    assert choose(query=None, cookie="uk", accept_language="en") == "uk"
    assert choose(query="en", cookie="uk", accept_language="uk") == "en"
    assert choose(query="xx", cookie=None, accept_language="uk") == "uk"
