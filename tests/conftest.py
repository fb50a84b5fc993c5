"""Shared fixtures: real peers (Orthanc, dcmtk storescp, a status SCP, the node process).

Missing Debian tools fail the tests that need them with a message saying how to get them;
nothing is skipped silently. Peers are started per test in `tmp_path` on ephemeral ports
and stopped in teardown; when a test fails, the end of each peer's log is printed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.peers import (
    DEBIAN_TOOLS,
    NodeProcess,
    Orthanc,
    StatusSCP,
    StoreSCP,
    missing_tools,
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Keep each phase's report on the item, so fixtures can tell whether the test failed.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is None or report.failed


@pytest.fixture(scope="session")
def debian_tools() -> None:
    """Fail (never skip) when a Debian program the real-peer tests use is missing."""
    missing = missing_tools(DEBIAN_TOOLS)
    if missing:
        listed = ", ".join(f"{tool} (package {pkg})" for tool, pkg in missing.items())
        pytest.fail(
            f"missing Debian tools: {listed}. Run `make test`, which installs them "
            "(scripts/install-system-deps.sh).",
            pytrace=False,
        )


@pytest.fixture
def orthanc_factory(
    debian_tools: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Orthanc]]:
    """Start Orthanc servers with `Orthanc(...)` keyword arguments; all stopped at teardown."""
    started: list[Orthanc] = []

    def start(**kwargs: Any) -> Orthanc:
        kwargs.setdefault("workdir", tmp_path / f"orthanc{len(started) or ''}")
        server = Orthanc(**kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop(kill=True)  # a graceful stop costs 3-4 s and the data is thrown away
        if _failed(request):
            print(server.describe())


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., Orthanc]) -> Orthanc:
    """A running Orthanc with default settings (AE "ORTHANC", no plugins, no auth)."""
    return orthanc_factory()


@pytest.fixture
def storescp_peer(
    debian_tools: None, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[StoreSCP]:
    """A running dcmtk storescp (AE "STORESCP") writing into tmp_path/storescp/received."""
    peer = StoreSCP(tmp_path / "storescp")
    with peer:
        yield peer
    if _failed(request):
        print(f"--- {peer.log_path}\n{peer.log_path.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def status_scp() -> Iterator[StatusSCP]:
    """A running pynetdicom Storage SCP answering with `status_scp.status` (0x0000 first)."""
    with StatusSCP() as scp:
        yield scp


@pytest.fixture
def node_factory(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., NodeProcess]]:
    """Start `dicomnode serve --config FILE` processes (`NodeProcess` arguments; not yet
    waited for: call `wait_ready()`); all stopped at teardown."""
    started: list[NodeProcess] = []

    def start(config_path: str | Path, **kwargs: Any) -> NodeProcess:
        kwargs.setdefault("workdir", tmp_path / f"node{len(started) or ''}")
        node = NodeProcess(config_path, **kwargs)
        started.append(node)
        return node.start()

    yield start
    for node in started:
        node.stop()
        if _failed(request):
            print(node.describe())


# ------------------------------------------------------------------ PostgreSQL (scale-out)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """One real PostgreSQL 15 server for the session (Debian `postgresql`), ephemeral port."""
    from tests.support.postgres import PostgresServer, postgres_missing

    missing = postgres_missing()
    if missing:
        pytest.fail(f"{missing}. Run `make test` (scripts/install-system-deps.sh).", pytrace=False)
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server: Any) -> str:
    """SQLAlchemy URL of a new, empty database on the session's PostgreSQL server."""
    return str(postgres_server.create_database())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind the node supports: SQLite file, PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dicomnode.db'}"
    return str(request.getfixturevalue("postgres_url"))
