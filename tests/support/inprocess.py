"""A node's work path in-process: the real C-STORE handler's storage step, the real pipeline
and worker over a fresh SQLite file, the tiny demo model, and the real API on the same
database. No threads, no network: a test stores bytes, steps the worker and reads the state,
so it sees exactly what an operator would, without waiting on timers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.ingest.admission import StoreContext, store_bytes
from dicomnode.metrics import Metrics
from dicomnode.model.classifier import Classifier
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from dicomnode.store.tables import ResultKind
from dicomnode.work.pipeline import Pipeline
from dicomnode.work.worker import JobWorker
from tests.support.data import TINY_ARCH

TOKEN = "inprocess-token"
#: More steps than any test study needs; a worker still busy after them is stuck.
MAX_STEPS = 200


@dataclass
class InProcessNode:
    jobs: Jobs
    spool: Spool
    pipeline: Pipeline
    worker: JobWorker
    store: StoreContext
    settings: Settings

    def receive(self, data: bytes) -> int:
        """Store one dataset as the C-STORE handler does; returns the DIMSE status."""
        return store_bytes(self.store, data, calling="TEST")[0]

    def run_until_idle(self) -> int:
        """Step the worker until it has nothing to do; the number of busy steps. Raises if it
        is still busy after `MAX_STEPS` (a retry loop) — and lets any error of a step out."""
        for busy_steps in range(MAX_STEPS):
            if not self.worker.step():
                return busy_steps
        raise AssertionError(f"the worker is still busy after {MAX_STEPS} steps")

    def api(self) -> TestClient:
        ctx = ApiContext(settings=self.settings, jobs=self.jobs, metrics=Metrics(),
                         card=lambda: self.pipeline.classifier.card, readiness=dict)  # fmt: skip
        return TestClient(create_app(ctx), headers={"Authorization": f"Bearer {TOKEN}"})

    def result_paths(self, study_uid: str, kind: ResultKind) -> list[Path]:
        return [self.spool.path(r.path) for r in self.jobs.results_for_study(study_uid, kind)]


def inprocess_node(
    folder: Path, *, classifier: Classifier | None = None, destinations: Sequence[dict] = ()
) -> InProcessNode:
    """A node over `folder` (database, spool) with studies stable at once; `destinations` as
    [[destinations]] entries (delivery is the test's to run: `deliver.outbox.deliver_due`)."""
    settings = Settings.model_validate({"api": {"token": TOKEN}, "node": {"data_dir": str(folder)},
                                        "destinations": list(destinations)})  # fmt: skip
    jobs = Jobs(make_engine(settings.database_url))
    spool = Spool(folder / "spool")
    classifier = classifier or Classifier.demo(architecture=TINY_ARCH, device="cpu")
    pipeline = Pipeline(settings=settings, jobs=jobs, spool=spool, classifier=classifier,
                        metrics=Metrics())  # fmt: skip
    worker = JobWorker(jobs=jobs, pipeline=pipeline, owner="inprocess", stable_seconds=0)
    store = StoreContext(spool=spool, jobs=jobs, metrics=Metrics(), salt="s")
    return InProcessNode(jobs, spool, pipeline, worker, store, settings)
