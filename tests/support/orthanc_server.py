"""The Debian Orthanc server as a test peer: self-contained config, REST helpers."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any, Self

import httpx
import pydicom

from tests.support.procs import (
    LOCALHOST,
    free_port,
    kill_group,
    log_tail,
    stop_process,
    wait_until,
)

ORTHANC_BIN = "/usr/sbin/Orthanc"
ORTHANC_PYTHON_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPython.so")
#: Debian's `orthanc-dicomweb`: STOW-RS/QIDO-RS/WADO-RS under /dicom-web/ (`dicomweb=` below).
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def load_orthanc_config(path: str | Path) -> dict[str, Any]:
    """Read an Orthanc JSON configuration (comments allowed, as Orthanc allows them).

    Relative paths of `PythonScript`, `Plugins` and `LuaScripts` are made absolute against the
    file's directory, because the test writes the merged configuration somewhere else.
    """
    path = Path(path).resolve()
    config = json.loads(_strip_json_comments(path.read_text()))
    if not isinstance(config, dict):
        raise ValueError(f"{path}: an Orthanc configuration must be a JSON object")

    def absolute(value: str) -> str:
        return value if os.path.isabs(value) else str(path.parent / value)

    if isinstance(config.get("PythonScript"), str):
        config["PythonScript"] = absolute(config["PythonScript"])
    for key in ("Plugins", "LuaScripts"):
        if isinstance(config.get(key), list):
            config[key] = [absolute(v) for v in config[key]]
    return config


def _strip_json_comments(text: str) -> str:
    """Remove // and /* */ comments outside JSON strings."""
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        c = text[i]
        if in_string:
            if c == "\\":
                out.append(text[i : i + 2])
                i += 2
                continue
            in_string = c != '"'
            out.append(c)
            i += 1
        elif c == '"':
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise ValueError("unterminated /* comment in Orthanc configuration")
            i = end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class Orthanc:
    """The Debian `Orthanc` server in a subprocess, configured entirely inside `workdir`.

    `config` is a base configuration (a dict, or a path such as the repo's
    `orthanc/orthanc.json`); storage, ports, AE title, access, modalities and plugins are
    then overridden for the test, and `extra` keys are applied last. The ports and storage
    stay the same across `stop()`/`start()`/`restart()`, so stored data survives a restart.

    Use as a context manager, or call `start()`/`stop()`.
    """

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        config: Mapping[str, Any] | str | Path | None = None,
        aet: str = "ORTHANC",
        modalities: Mapping[str, Sequence[Any] | Mapping[str, Any]] | None = None,
        plugins: Sequence[str | Path] | None = None,
        python_script: str | Path | None = None,
        dicomweb: Mapping[str, Any] | None = None,
        users: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        verbose: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="orthanc-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.users = dict(users or {})
        self.env = dict(env or {})
        self.verbose = verbose
        self.start_timeout = start_timeout
        self.config_path = self.workdir / "orthanc.json"
        self.storage_dir = self.workdir / "storage"
        self.log_paths: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

        base = load_orthanc_config(config) if isinstance(config, str | Path) else config
        settings: dict[str, Any] = {"Name": "dicomnode-test-orthanc", **dict(base or {})}
        settings.update(
            StorageDirectory=str(self.storage_dir),
            IndexDirectory=str(self.storage_dir),
            HttpPort=self.http_port,
            DicomPort=self.dicom_port,
            DicomAet=aet,
            RemoteAccessAllowed=False,
            AuthenticationEnabled=bool(self.users),
            RegisteredUsers=self.users,
        )
        if modalities is not None:
            settings["DicomModalities"] = {k: _jsonable(v) for k, v in modalities.items()}
        if python_script is not None:
            settings["PythonScript"] = str(Path(python_script).resolve())
            if plugins is None:
                plugins = [ORTHANC_PYTHON_PLUGIN]
        if dicomweb is not None:
            # The DICOMweb plugin at /dicom-web/, with `dicomweb` merged into its "DicomWeb"
            # section (e.g. {"Servers": {"node": {...}}}: the peers Orthanc pushes to by STOW-RS).
            settings["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", **dicomweb}
            plugins = [*(plugins or []), ORTHANC_DICOMWEB_PLUGIN]
        if plugins is not None:
            settings["Plugins"] = [str(p) for p in plugins]
        settings.update(extra or {})
        self.settings = settings

    # -- life cycle

    @property
    def http_url(self) -> str:
        return f"http://{LOCALHOST}:{self.http_port}"

    @property
    def log_path(self) -> Path | None:
        """Orthanc's log of the current (or last) run; stdout/stderr sit next to it."""
        return self.log_paths[-1] if self.log_paths else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Write the configuration, start Orthanc and wait until `GET /system` answers."""
        if self.running:
            raise RuntimeError("Orthanc is already running")
        # Orthanc only logs an error for a missing plugin and starts anyway: check here.
        wanted = [*self.settings.get("Plugins", []), self.settings.get("PythonScript")]
        for path in filter(None, wanted):
            if not Path(path).exists():
                raise FileNotFoundError(f"Orthanc plugin or script not found: {path}")
        self.config_path.write_text(json.dumps(self.settings, indent=2))
        run = len(self.log_paths) + 1
        log = self.workdir / f"orthanc-{run}.log"
        self.log_paths.append(log)
        cmd = [ORTHANC_BIN, f"--logfile={log}"]
        if self.verbose:
            cmd.append("--verbose")
        cmd.append(str(self.config_path))
        with open(self.workdir / f"orthanc-{run}.out", "wb") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        try:
            wait_until(
                self._answers,
                timeout=self.start_timeout,
                what=f"Orthanc to answer GET /system on port {self.http_port}",
                ignore=(httpx.TransportError,),
            )
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"Orthanc did not start: {exc}\n{self.describe()}") from exc
        return self

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited with code {self._proc.returncode}")
        return self.client.get("/system", timeout=2).status_code == 200

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> int | None:
        """Stop Orthanc and wait; returns its exit code.

        Graceful by default (SIGTERM, SIGKILL after `timeout`); a graceful stop takes Orthanc
        about 3-4 s (its HTTP and DICOM servers poll for shutdown). `kill=True` sends SIGKILL
        at once: fine for teardown, or to simulate a PACS crash.
        """
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is None:
            return None
        if kill:
            kill_group(self._proc)
        code = stop_process(self._proc, timeout=timeout)
        self._proc = None
        return code

    def restart(self) -> Self:
        """Stop and start again with the same ports, configuration and storage."""
        self.stop()
        return self.start()

    def describe(self) -> str:
        """Paths and the end of the log, for failure messages."""
        out = self.log_path.with_suffix(".out") if self.log_path else None
        return (
            f"Orthanc workdir {self.workdir}\n--- {self.log_path}\n{log_tail(self.log_path)}"
            f"\n--- {out}\n{log_tail(out, 20)}"
        )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- REST

    @property
    def client(self) -> httpx.Client:
        """An httpx client on the REST API (with the first registered user, if any)."""
        if self._client is None:
            auth = next(iter(self.users.items()), None)
            self._client = httpx.Client(base_url=self.http_url, auth=auth, timeout=60)
        return self._client

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """GET and return the decoded JSON (raises on an HTTP error status)."""
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def get_bytes(self, path: str) -> bytes:
        response = self.client.get(path)
        response.raise_for_status()
        return response.content

    def post(self, path: str, json: Any = None, *, content: bytes | None = None) -> Any:
        """POST JSON (or raw `content`) and return the decoded JSON answer, or its text."""
        response = self.client.post(path, json=json, content=content)
        response.raise_for_status()
        return _json_or_text(response)

    def delete(self, path: str) -> None:
        self.client.delete(path).raise_for_status()

    def instances(self) -> list[str]:
        """Orthanc IDs of all stored instances."""
        return list(self.get("/instances"))

    def studies(self) -> list[str]:
        return list(self.get("/studies"))

    def upload(self, path: str | Path) -> dict[str, Any]:
        """Store a DICOM file through `POST /instances`; returns Orthanc's answer (ID, Status)."""
        answer = self.post("/instances", content=Path(path).read_bytes())
        if not isinstance(answer, dict) or answer.get("Status") not in ("Success", "AlreadyStored"):
            raise AssertionError(f"Orthanc refused the upload: {answer!r}")
        return answer

    def instance_tags(self, instance_id: str, *, simplify: bool = True) -> dict[str, Any]:
        """Tags of one instance; keyword -> value when `simplify`, Orthanc's full form if not."""
        kind = "simplified-tags" if simplify else "tags"
        return dict(self.get(f"/instances/{instance_id}/{kind}"))

    def instance_file(self, instance_id: str) -> bytes:
        return self.get_bytes(f"/instances/{instance_id}/file")

    def instance_dataset(self, instance_id: str) -> pydicom.Dataset:
        """The stored file, parsed by pydicom (e.g. to check an SR the node delivered)."""
        return pydicom.dcmread(BytesIO(self.instance_file(instance_id)))

    def transfer_syntax(self, instance_id: str) -> str:
        """Transfer syntax UID the instance is stored with."""
        return self.client.get(f"/instances/{instance_id}/metadata/TransferSyntax").text

    def find_instances(self, **tags: Any) -> list[str]:
        """Orthanc IDs of the instances matching DICOM keyword=value (`/tools/find`)."""
        query = {key: str(value) for key, value in tags.items()}
        return list(self.post("/tools/find", {"Level": "Instance", "Query": query}))

    def study_of(self, sop_instance_uid: str) -> str | None:
        """Orthanc ID of the study holding the instance with this SOP Instance UID, or None."""
        found = self.post("/tools/lookup", content=sop_instance_uid.encode())
        for item in found:
            if item.get("Type") == "Instance":
                return str(self.get(f"/instances/{item['ID']}/study")["ID"])
        return None

    def send_to_modality(
        self, modality: str, resources: Sequence[str], *, timeout: float = 60
    ) -> dict[str, Any]:
        """Ask Orthanc to C-STORE `resources` (Orthanc IDs) to a configured modality."""
        body = {"Resources": list(resources), "Synchronous": True, "Timeout": int(timeout)}
        return dict(self.post(f"/modalities/{modality}/store", body))

    def stow_to(self, server: str, resources: Sequence[str]) -> dict[str, Any]:
        """Ask Orthanc's DICOMweb plugin to push `resources` (Orthanc IDs) by STOW-RS to one
        of its `DicomWeb.Servers` (`POST /dicom-web/servers/{server}/stow`, synchronous)."""
        body = {"Resources": list(resources), "Synchronous": True}
        return dict(self.post(f"/dicom-web/servers/{server}/stow", body) or {})

    def echo_modality(self, modality: str) -> bool:
        """C-ECHO from Orthanc to a configured modality; True if it answered."""
        return self.client.post(f"/modalities/{modality}/echo", json={}).status_code == 200


def _jsonable(value: Sequence[Any] | Mapping[str, Any]) -> Any:
    return dict(value) if isinstance(value, Mapping) else list(value)


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text
