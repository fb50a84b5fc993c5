"""The node's HTTP API in-process (FastAPI's TestClient) over a fresh SQLite database, with the
audit trail on: for tests of API routes that need no running node."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.routing import BaseRoute

from dicomnode.audit import Audit
from dicomnode.config import Settings
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.metrics import Metrics
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs

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
