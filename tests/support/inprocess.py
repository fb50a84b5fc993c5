"""A node's work path in-process: the real C-STORE handler's storage step, the real pipeline
and worker over a fresh SQLite file, the tiny demo model, and the real API on the same
database. No threads, no network: a test stores bytes, steps the worker and reads the state,
so it sees exactly what an operator would, without waiting on timers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
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
from tests.support.procs import LOCALHOST, free_port, wait_until

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

    def app(self) -> FastAPI:
        ctx = ApiContext(settings=self.settings, jobs=self.jobs, metrics=Metrics(),
                         card=lambda: self.pipeline.classifier.card, readiness=dict,
                         store=self.store)  # fmt: skip
        return create_app(ctx)

    def api(self) -> TestClient:
        return TestClient(self.app(), headers={"Authorization": f"Bearer {TOKEN}"})

    def serve_api(self) -> AbstractContextManager[str]:
        """The API on a real loopback port, for peers that call it (an Orthanc pushing by
        STOW-RS); yields its base URL, stopped on exit."""
        return serve_app(self.app())

    def result_paths(self, study_uid: str, kind: ResultKind) -> list[Path]:
        return [self.spool.path(r.path) for r in self.jobs.results_for_study(study_uid, kind)]


@contextmanager
def serve_app(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn in a thread on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=LOCALHOST, port=port, log_config=None,
                                           lifespan="off"))  # fmt: skip
    thread = threading.Thread(target=server.run, name="inprocess-api", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, timeout=20, what="the in-process API to listen")
        yield f"http://{LOCALHOST}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def inprocess_node(
    folder: Path, *, classifier: Classifier | None = None, **sections: Any
) -> InProcessNode:
    """A node over `folder` (database, spool) with studies stable at once; `sections`: more
    settings (e.g. `destinations=[...]`, `delivery={...}`)."""
    settings = Settings.model_validate({"api": {"token": TOKEN}, "node": {"data_dir": str(folder)},
                                        **sections})  # fmt: skip
    jobs = Jobs(make_engine(settings.database_url))
    spool = Spool(folder / "spool")
    classifier = classifier or Classifier.demo(architecture=TINY_ARCH, device="cpu")
    pipeline = Pipeline(settings=settings, jobs=jobs, spool=spool, classifier=classifier,
                        metrics=Metrics())  # fmt: skip
    worker = JobWorker(jobs=jobs, pipeline=pipeline, owner="inprocess", stable_seconds=0)
    store = StoreContext(spool=spool, jobs=jobs, metrics=Metrics(), salt="s")
    return InProcessNode(jobs, spool, pipeline, worker, store, settings)
