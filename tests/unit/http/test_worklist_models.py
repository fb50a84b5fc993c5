"""Every result names the model that made it (API, page, filter), server-side sorting, and one
date and modality rule across `/api/worklist` and `/api/studies/{uid}` (real SQLite, the
`Jobs` calls the node makes, FastAPI TestClient)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.metrics import Metrics
from dicomnode.model.card import ModelCard
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.reports import report_model
from dicomnode.store.spool import Spool
from dicomnode.store.tables import JobState
from tests.support.jobs import claim

TOKEN = "model-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Stamp = tuple[str, str, bool]
DEMO = ("dicomnode fracture triage", "demo-tiny-seed0", False)
TRAINED = ModelCard(name="BoneNet", version="2026.2", architecture="test_efficientnet",
                    input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, trained=True)  # fmt: skip


@dataclass
class Node:
    jobs: Jobs
    n: int = 0

    def image(self, study: str, p: float | None, *, model: Stamp | None = DEMO,
              name: str = "DOE^JANE", modality: str = "CR", own_output: bool = False,
              state: JobState = JobState.CLASSIFIED,
              reason: str | None = None) -> None:  # fmt: skip
        self.n += 1
        job_id, _ = self.jobs.enqueue(
            Received(
                sop_instance_uid=f"{study}.{self.n}", sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
                study_instance_uid=study, series_instance_uid=f"{study}.0", modality=modality,
                body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="x",
                study={"patient_name": name, "patient_id": f"P{self.n}",
                       "accession_number": f"A{self.n}", "study_date": "20040826",
                       "study_time": "1430", "study_description": "Hand", "patient_birth_date":
                       "19700102"},
                own_output=own_output,
            )
        )  # fmt: skip
        job = claim(self.jobs, owner="t", lease_seconds=60)
        assert job is not None and job.id == job_id
        name_, version, trained = model if p is not None and model else (None, None, None)
        outcome = None if p is None else "positive" if p >= 0.7 else "negative"
        self.jobs.finish(job_id, state=state, probability=p, outcome=outcome,
                         reason=reason, model_version=version, model_name=name_,
                         model_trained=trained)  # fmt: skip

    def report(self, study: str) -> None:
        classified = self.jobs.classified_jobs(study)
        top = max(j.probability or 0 for j in classified)
        self.jobs.record_report(study_instance_uid=study, version=1, job_count=len(classified),
                                outcome="positive" if top >= 0.7 else "negative",
                                max_probability=top, model=report_model(classified))  # fmt: skip


@pytest.fixture
def node(tmp_path) -> Node:
    return Node(Jobs(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")))


def _client(node: Node, tmp_path, card: ModelCard = TRAINED) -> TestClient:
    settings = Settings.model_validate({"api": {"token": TOKEN}})
    ctx = ApiContext(settings=settings, jobs=node.jobs, metrics=Metrics(), card=lambda: card,
                     readiness=lambda: {"database": True},
                     spool=Spool(tmp_path / "spool"))  # fmt: skip
    return TestClient(create_app(ctx))


TRAINED_STAMP = (TRAINED.name, TRAINED.version, True)


@pytest.fixture
def served(node: Node) -> Node:
    """1.1: the demo's negative result (before the trained package); 1.2: the trained model's
    positive; 1.3: images of both; 1.4: still waiting."""
    node.image("1.1", 0.1, model=DEMO, name="SMITH^ANNA")
    node.report("1.1")
    node.image("1.2", 0.9, model=TRAINED_STAMP, name="BROWN^BOB")
    node.report("1.2")
    node.image("1.3", 0.2, model=DEMO, name="ADAMS^EVE")
    node.image("1.3", 0.3, model=TRAINED_STAMP)
    node.report("1.3")
    node.image("1.4", None, state=JobState.PROCESSING, name="CLARK^ZOE")
    return node


def test_each_result_names_its_model_and_an_old_demo_result_stays_demo(served, tmp_path):
    client = _client(served, tmp_path)
    rows = {s["study_instance_uid"]: s for s in
            client.get("/api/worklist", headers=AUTH).json()["studies"]}  # fmt: skip
    assert rows["1.1"]["model"] == {
        "name": DEMO[0],
        "version": DEMO[1],
        "trained": False,
        "untrained_demo": True,
        "several": False,
        "served": False,
    }
    assert rows["1.2"]["model"] == {
        "name": "BoneNet",
        "version": "2026.2",
        "trained": True,
        "untrained_demo": False,
        "several": False,
        "served": True,
    }
    assert rows["1.3"]["model"]["untrained_demo"] and rows["1.3"]["model"]["several"]
    assert rows["1.4"]["model"] is None  # nothing classified yet
    study = client.get("/api/studies/1.1", headers=AUTH).json()
    assert study["model"]["untrained_demo"] and study["model"]["version"] == DEMO[1]
    assert client.get("/api/studies/1.3", headers=AUTH).json()["model"]["trained"] is None
    jobs = client.get("/api/jobs?study_instance_uid=1.1", headers=AUTH).json()["jobs"]
    assert (jobs[0]["model_name"], jobs[0]["model_trained"]) == (DEMO[0], False)

    html = client.get("/", headers=AUTH).text
    kinds = dict(re.findall(r'data-study-uid="([\d.]+)"[^>]*data-model="(\w+)"', html))
    assert kinds == {"1.1": "demo", "1.2": "trained", "1.3": "demo", "1.4": "none"}
    assert html.count('class="model-badge model-demo old"') == 2 and ">DEMO<" in html
    uk = client.get("/?lang=uk", headers=AUTH).text
    assert ">ДЕМО<" in uk and ">DEMO<" not in uk


def test_results_of_models_no_longer_served_can_be_hidden(served, tmp_path):
    client = _client(served, tmp_path)
    api = client.get("/api/worklist?served_only=true", headers=AUTH).json()
    assert [s["study_instance_uid"] for s in api["studies"]] == ["1.2", "1.4"]
    assert api["total"] == 2
    html = client.get("/?served_only=1", headers=AUTH).text
    assert re.findall(r'data-study-uid="([\d.]+)"', html) == ["1.2", "1.4"]
    assert 'id="filter-served-only" checked' in html


def test_sorting_is_done_by_the_server_so_it_holds_across_pages(served, tmp_path):
    client = _client(served, tmp_path)

    def uids(query: str) -> list[str]:
        r = client.get(f"/api/worklist?{query}", headers=AUTH)
        assert r.status_code == 200, r.text
        return [s["study_instance_uid"] for s in r.json()["studies"]]

    assert uids("") == ["1.2", "1.1", "1.3", "1.4"]  # reading order stays the default
    assert uids("sort=probability&order=asc") == ["1.1", "1.3", "1.2", "1.4"]  # empty last
    assert uids("sort=probability&order=desc&limit=2") == ["1.2", "1.3"]
    assert uids("sort=probability&order=desc&limit=2&offset=2") == ["1.1", "1.4"]
    assert uids("sort=patient") == ["1.3", "1.2", "1.4", "1.1"]  # Adams, Brown, Clark, Smith
    assert client.get("/api/worklist?sort=nope", headers=AUTH).status_code == 422
    page = client.get("/?sort=probability&order=desc&limit=2&offset=2", headers=AUTH).text
    assert re.findall(r'data-study-uid="([\d.]+)"', page) == ["1.1", "1.4"]
    assert 'aria-sort="descending"' in page
    assert 'id="sort-probability" href="/?limit=2&amp;sort=probability"' in page  # again: asc
    assert client.get("/?order=sideways", headers=AUTH).status_code == 422


def test_the_page_shows_names_waiting_time_and_failure_reason(node, tmp_path):
    node.image("2.1", None, state=JobState.FAILED, reason="pixel data cannot be decoded",
               name="O'BRIEN^MARY ANN^^DR^JR")  # fmt: skip
    node.image("2.2", 0.9, model=TRAINED_STAMP)
    node.report("2.2")
    client = _client(node, tmp_path)
    html = client.get("/", headers=AUTH).text
    assert "O&#39;Brien, Dr Mary Ann, Jr" in html
    assert '<span class="reason">pixel data cannot be decoded</span>' in html
    assert re.search(r'class="waiting" title="[^"]+">&lt; 1 min<', html)  # still waiting
    assert re.search(r'class="waiting done" title="[^"]+">✓ &lt; 1 min<', html)  # reported
    assert "<span>2004-08-26</span> <span>14:30</span>" in html


def test_one_date_format_and_one_modality_rule_in_every_api(node, tmp_path):
    node.image("3.1", 0.9, model=TRAINED_STAMP)
    node.report("3.1")
    # The node's own SR and SC coming back (a routing loop it refuses): not the study's.
    node.image("3.1", None, modality="SR", own_output=True, state=JobState.SKIPPED,
               reason="own output")  # fmt: skip
    node.image("3.1", None, modality="OT", own_output=True, state=JobState.SKIPPED,
               reason="own output")  # fmt: skip
    client = _client(node, tmp_path)
    [row] = client.get("/api/worklist", headers=AUTH).json()["studies"]
    study = client.get("/api/studies/3.1", headers=AUTH).json()
    for data in (row, study):
        assert data["study_date"] == "2004-08-26" and data["study_time"] == "14:30:00"
        assert data["modalities"] == ["CR"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", data["reported_at"])
    assert study["patient"]["birth_date"] == "1970-01-02"


def test_the_audit_names_the_sort_and_the_served_model_filter():
    from dicomnode.http.access import worklist_filters
    from dicomnode.store.worklist import WorklistFilters

    filters = WorklistFilters(sort="probability", descending=True, model_version="2026.2")
    assert worklist_filters(filters, identifiers=False) == (
        "served model only sort=probability desc limit=50 offset=0 patient identifiers hidden"
    )
