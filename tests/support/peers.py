"""Real DICOM peers for integration tests: Orthanc, dcmtk tools, a status SCP and the node.

Every server listens on an ephemeral loopback port, keeps its files and logs in a directory
the test owns, and is stopped in teardown. Nothing here sleeps for a fixed time: readiness is
polled with a deadline (`wait_until`). Logs stay in files; `log_tail()` gives the end of one
when something fails to start.

This module is the one to import; Orthanc lives in `orthanc_server.py`, the dcmtk tools in
`dcmtk.py` and the process helpers in `procs.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import httpx
import pydicom

from tests.support.dcmtk import (
    UNCOMPRESSED_SYNTAXES,
    StoreResult,
    StoreSCP,
    echoscu,
    storescu,
)
from tests.support.orthanc_server import (
    ORTHANC_BIN,
    ORTHANC_DICOMWEB_PLUGIN,
    ORTHANC_PYTHON_PLUGIN,
    Orthanc,
    load_orthanc_config,
)
from tests.support.procs import (
    LOCALHOST,
    WaitTimeout,
    free_port,
    kill_group,
    log_tail,
    stop_process,
    wait_until,
)

__all__ = [
    "DEBIAN_TOOLS",
    "LOCALHOST",
    "ORTHANC_BIN",
    "ORTHANC_DICOMWEB_PLUGIN",
    "ORTHANC_PYTHON_PLUGIN",
    "UNCOMPRESSED_SYNTAXES",
    "NodeProcess",
    "Orthanc",
    "StatusSCP",
    "StoreResult",
    "StoreSCP",
    "WaitTimeout",
    "echoscu",
    "free_port",
    "load_orthanc_config",
    "log_tail",
    "missing_tools",
    "storescu",
    "wait_until",
]

# ------------------------------------------------------------------- pynetdicom status SCP


class StatusSCP:
    """A Storage SCP (pynetdicom, in this process) answering every C-STORE with `status`.

    For delivery tests that need a chosen failure (0xA700 out of resources, 0xC000 …) and
    recovery: set `scp.status = 0x0000` while it runs. `attempts` counts every C-STORE,
    `stored` lists SOP Instance UIDs answered with success (datasets in `datasets`).
    """

    def __init__(self, *, aet: str = "STATUSSCP", status: int = 0x0000) -> None:
        self.aet = aet
        self.status = status
        self.port = free_port()
        self.attempts = 0
        self.stored: list[str] = []
        self.datasets: list[pydicom.Dataset] = []
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self) -> Self:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title=self.aet)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax:
                ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self._server = ae.start_server(
            (LOCALHOST, self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        return self

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.attempts += 1
            status = self.status
            if status == 0x0000:
                ds = event.dataset
                ds.file_meta = event.file_meta
                self.stored.append(str(ds.SOPInstanceUID))
                self.datasets.append(ds)
        return status

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- the node


def _default_node_command() -> list[str]:
    script = Path(sys.executable).parent / "dicomnode"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from dicomnode.cli import main; sys.exit(main())"]


class NodeProcess:
    """`dicomnode serve --config FILE` in a subprocess, its output in `log_path`.

    The API address comes from the config's `[api] host/port` unless `api_url` is given.
    `stop()` is a graceful SIGTERM (SIGKILL after the timeout); `kill9()` simulates a crash.
    """

    def __init__(
        self,
        config_path: str | Path,
        *,
        workdir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        api_url: str | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.config_path = Path(config_path).resolve()
        self.workdir = Path(workdir).resolve() if workdir else self.config_path.parent
        self.env = dict(env or {})
        self._api_url = api_url
        self.command = list(command) if command else _default_node_command()
        self.log_path = self.workdir / "dicomnode.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        if self._api_url is None:
            api = tomllib.loads(self.config_path.read_text()).get("api", {})
            if "port" not in api:
                raise ValueError(f"{self.config_path}: no [api] port; pass api_url=")
            host = str(api.get("host", LOCALHOST))
            host = {"0.0.0.0": LOCALHOST, "::": "::1", "": LOCALHOST}.get(host, host)
            self._api_url = f"http://{f'[{host}]' if ':' in host else host}:{int(api['port'])}"
        return self._api_url

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        if self.running:
            raise RuntimeError("the node is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [*self.command, "serve", "--config", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                start_new_session=True,
            )
        return self

    def wait_ready(self, url: str | None = None, *, timeout: float = 120.0) -> Self:
        """Poll `GET {api}/readyz` until 200; fail at once (with the log) if the node exits."""
        target = url or f"{self.api_url}/readyz"

        def ready() -> bool:
            if self._proc is None or self._proc.poll() is not None:
                code = self._proc.returncode if self._proc else None
                raise AssertionError(
                    f"dicomnode exited with code {code} before it was ready\n{self.describe()}"
                )
            return httpx.get(target, timeout=2).status_code == 200

        try:
            wait_until(
                ready,
                timeout=timeout,
                what=f"dicomnode ready at {target}",
                interval=0.1,
                ignore=(httpx.TransportError,),
            )
        except WaitTimeout as exc:
            raise WaitTimeout(f"{exc}\n{self.describe()}") from None
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait up to `timeout` for a clean exit, then SIGKILL. Returns the exit code."""
        if self._proc is None:
            return None
        return stop_process(self._proc, timeout=timeout)

    def kill9(self) -> int | None:
        """SIGKILL the node and its children now (a crash, for recovery tests)."""
        if self._proc is None:
            return None
        kill_group(self._proc)
        return self._proc.wait(timeout=10)

    def describe(self) -> str:
        return f"--- {self.log_path}\n{log_tail(self.log_path, 60)}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Program (name on PATH, or absolute path) -> Debian package that provides it.
DEBIAN_TOOLS: dict[str, str] = {
    ORTHANC_BIN: "orthanc",
    str(ORTHANC_PYTHON_PLUGIN): "orthanc-python",
    str(ORTHANC_DICOMWEB_PLUGIN): "orthanc-dicomweb",
    "storescu": "dcmtk",
    "storescp": "dcmtk",
    "echoscu": "dcmtk",
    "dsrdump": "dcmtk",
    "dciodvfy": "dicom3tools",
    "DicomSRValidator": "pixelmed-apps",
}


def missing_tools(tools: Mapping[str, str] = DEBIAN_TOOLS) -> dict[str, str]:
    """The programs of `tools` this machine lacks, each with its Debian package."""
    missing = {}
    for tool, package in tools.items():
        found = Path(tool).exists() if os.path.isabs(tool) else shutil.which(tool) is not None
        if not found:
            missing[tool] = package
    return missing
