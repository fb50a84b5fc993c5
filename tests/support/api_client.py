"""The node's HTTP API in-process (FastAPI's TestClient) over a fresh SQLite database, with the
audit trail on: for tests of API routes that need no running node."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from dicomnode.audit import Audit
from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.ingest.admission import StoreContext
from dicomnode.metrics import Metrics
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool

TOKEN = "t0ken"


@contextmanager
def api_client(
    tmp_path: Path, *, api: dict[str, Any] | None = None, **context: Any
) -> Iterator[tuple[TestClient, Jobs, Audit]]:
    """(client sending the bearer token, the API's Jobs, its Audit); salt "salt". `api`: more
    `[api]` settings; `context`: other fields of the ApiContext (e.g. `orthanc_pull`)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    jobs, audit = Jobs(engine), Audit(engine, salt="salt")
    settings = Settings.model_validate(
        {"api": {"token": TOKEN, **(api or {})}, "node": {"log_salt": "salt",
                                                         "data_dir": str(tmp_path / "data")}}
    )  # fmt: skip
    fields: dict[str, Any] = {"card": lambda: None, "readiness": dict, "audit": audit, **context}
    ctx = ApiContext(settings=settings, jobs=jobs, metrics=Metrics(), **fields)
    try:
        yield TestClient(create_app(ctx), headers={"Authorization": f"Bearer {TOKEN}"}), jobs, audit
    finally:
        engine.dispose()


def app_routes(app: FastAPI) -> list[BaseRoute]:
    """Every route of `app`, those of its routers included (FastAPI 0.16x keeps an included
    router as one entry of `app.routes`; older versions copy its routes there)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI < 0.16x: the routes are on the app itself
        return list(app.routes)
    return [context.original_route for context in iter_route_contexts(app.routes)]


@dataclass
class StowApi:
    """The API with STOW-RS receiving (admission into a spool), its parts, and a client."""

    app: FastAPI
    client: TestClient
    jobs: Jobs
    spool: Spool
    audit: Audit

    def stored(self) -> list[Path]:
        """Every file in the spool: what STOW-RS stored (nothing else writes there)."""
        return [p for p in self.spool.root.rglob("*") if p.is_file()]


@contextmanager
def stow_api(
    tmp_path: Path, *, max_dataset_bytes: int = 1024 * 1024, **node_settings: Any
) -> Iterator[StowApi]:
    """An API receiving by STOW-RS over a fresh SQLite database and spool (no model: nothing
    is classified), its client sending the bearer token; salt "salt"; `node_settings`: more
    `[node]` settings."""
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    jobs, audit, spool = Jobs(engine), Audit(engine, salt="salt"), Spool(tmp_path / "spool")
    node = {"data_dir": str(tmp_path), "log_salt": "salt", **node_settings}
    settings = Settings.model_validate({"api": {"token": TOKEN}, "node": node})
    store = StoreContext(spool=spool, jobs=jobs, metrics=Metrics(), salt="salt", audit=audit,
                         max_dataset_bytes=max_dataset_bytes)  # fmt: skip
    ctx = ApiContext(settings=settings, jobs=jobs, metrics=Metrics(), card=lambda: None,
                     readiness=dict, audit=audit, store=store)  # fmt: skip
    app = create_app(ctx)
    client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        yield StowApi(app, client, jobs, spool, audit)
    finally:
        engine.dispose()
