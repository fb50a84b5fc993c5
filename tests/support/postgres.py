"""A real PostgreSQL 15 server (Debian's `postgresql`) for tests, on an ephemeral port.

PostgreSQL refuses to run as root, so when the tests run as root the data directory belongs to
the `postgres` user and the server is started with `runuser -u postgres`. The socket lives in
the data directory, TCP listens on 127.0.0.1 only, authentication is `trust` (loopback, test
data only). `create_database()` gives each test its own empty database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Self

from tests.support.procs import LOCALHOST, free_port, log_tail, wait_until

PG_BIN = Path(os.environ.get("DICOMNODE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
DEBIAN_PACKAGE = "postgresql"


def postgres_missing() -> str | None:
    """Why PostgreSQL cannot be started here, or None."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} missing (Debian package {DEBIAN_PACKAGE})"
    return None


class PostgresServer:
    """`initdb` + `pg_ctl start` in a fresh directory; `stop()` removes everything."""

    def __init__(self, *, user: str = "postgres") -> None:
        self.user = user
        self.port = free_port()
        self.root: Path | None = None
        self._as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self.root is not None
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{LOCALHOST}:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> Self:
        missing = postgres_missing()
        if missing:
            raise RuntimeError(f"cannot start PostgreSQL: {missing}")
        # /tmp is world-traversable, pytest's tmp_path (under /tmp/pytest-of-root) is not.
        self.root = Path(tempfile.mkdtemp(prefix="dicomnode-pg-"))
        self.root.chmod(0o755)
        if self._as_root:
            shutil.chown(self.root, "postgres", "postgres")
        done = self._run(str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-A", "trust",
                         "-U", self.user, "-E", "UTF8", "--no-sync")  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses={LOCALHOST} "
            "-c fsync=off -c max_connections=200 -c timezone=UTC"
        )
        done = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                         "-l", str(self.log_path), "-w", "-t", "60", "start")  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr}\n{log_tail(self.log_path)}")
        wait_until(self._accepts, timeout=60, what="PostgreSQL accepting connections")
        return self

    def _accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _dsn(self, database: str) -> str:
        return f"host={LOCALHOST} port={self.port} user={self.user} dbname={database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.root is None:
            return
        if self.data_dir.exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate",
                      "-w", "-t", "30", "stop")  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def describe(self) -> str:
        return f"--- {self.log_path}\n{log_tail(self.log_path, 40)}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
