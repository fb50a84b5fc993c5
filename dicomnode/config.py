"""Typed settings from a TOML file plus `DICOMNODE_<SECTION>__<KEY>` environment overrides.

Everything is validated at start-up; an invalid value stops the node with a message naming the
key. Insecure combinations (an API reachable beyond loopback without a token) are refused.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# The [[destinations]] tables (and the types they share with [node]) live in destinations.py;
# Destination and DicomwebDestination stay importable from here.
from dicomnode.destinations import (  # noqa: F401
    AETitle,
    AnyDestination,
    Destination,
    DicomwebDestination,
    Port,
    is_loopback,
)
from dicomnode.uids import DEFAULT_UID_ROOT, is_valid_uid

ENV_PREFIX = "DICOMNODE_"


class Runtime(StrEnum):
    """The inference runtimes (`model.runtime`), defined once: `dicomnode.model.runtime` runs
    them. Here so that reading the configuration never imports the model (numpy, ONNX)."""

    AUTO = "auto"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


#: Said by the start-up log, `dicomnode doctor`, `/readyz` and the pages while no
#: [[destinations]] entry is configured (the shipped configuration has none).
NO_DESTINATION_WARNING = (
    "no [[destinations]] configured: results (SR + SC) are made and kept on this node "
    "(worklist, API) but sent nowhere, and nothing is retried; add your PACS as a "
    "[[destinations]] entry"
)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeSettings(_Section):
    ae_title: AETitle = "DICOMNODE"
    host: str = "127.0.0.1"
    port: Port = 11112
    data_dir: Path = Path("var")
    study_stable_seconds: float = Field(10.0, ge=0)
    allowed_calling_ae_titles: list[AETitle] = []
    uid_root: str = DEFAULT_UID_ROOT
    max_associations: int = Field(10, ge=1, le=1000)
    # Slow peers (dicomnode/ingest/slots.py, dicomnode/ingest/pdu_guard.py): connections whose
    # A-ASSOCIATE-RQ has not arrived yet have their own budget; data must keep flowing.
    max_negotiating: int = Field(32, ge=1, le=1000)
    max_negotiating_per_address: int = Field(8, ge=1, le=1000)
    min_receive_bytes_per_second: int = Field(4096, ge=0)
    receive_rate_window_seconds: float = Field(10.0, gt=0, le=3600)
    max_pdu_size: int = Field(131072, ge=0)
    acse_timeout: float = Field(30.0, gt=0)
    dimse_timeout: float = Field(60.0, gt=0)
    network_timeout: float = Field(60.0, gt=0)
    min_free_mb: int = Field(500, ge=0)
    max_dataset_mb: int = Field(1024, ge=1)
    log_salt: str = ""
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    tls_ca_certificate: Path | None = None
    tls_required: bool = False
    # Receiving TLS apart from sending (dicomnode/ingest/tls.py): the CA of client certificates,
    # whether they are required, and a TLS port beside a plaintext `port` (0: none).
    tls_client_ca_certificate: Path | None = None
    tls_verify_clients: bool = True
    tls_port: int = Field(0, ge=0, le=65535)
    # Scale-out (several nodes sharing PostgreSQL): a stable id per node, a shared spool.
    node_id: str = Field("", max_length=200)
    spool_dir: Path | None = None
    shutdown_grace_seconds: float = Field(30.0, gt=0, le=3600)
    # Results that cannot be written (disk full, …): the job waits, retried with backoff.
    resource_retry_initial_seconds: float = Field(5.0, gt=0, le=3600)
    resource_retry_max_seconds: float = Field(120.0, gt=0, le=86400)

    @field_validator("ae_title")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("spool_dir", "tls_certificate", "tls_private_key", "tls_ca_certificate",
                     "tls_client_ca_certificate", mode="before")  # fmt: skip
    @classmethod
    def _no_empty_path(cls, value: Any) -> Any:
        """An empty value (e.g. `DICOMNODE_NODE__TLS_CA_CERTIFICATE=` in a compose file) is
        unset, not the current directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def max_dataset_bytes(self) -> int:
        """`max_dataset_mb` in bytes: the admission limit of every way in (uploads included)."""
        return self.max_dataset_mb * 1024 * 1024

    @model_validator(mode="after")
    def _negotiating(self) -> NodeSettings:
        if self.max_negotiating_per_address > self.max_negotiating:
            raise ValueError("max_negotiating_per_address must not exceed max_negotiating")
        return self

    @field_validator("uid_root")
    @classmethod
    def _uid_root(cls, value: str) -> str:
        if not value.endswith("."):
            value += "."
        if not is_valid_uid(value[:-1]) or len(value) > 44:
            raise ValueError("must be a valid UID prefix of at most 44 characters")
        return value


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    token: str = ""
    show_patient_identifiers: bool = True
    viewer_url: str = ""
    # HTTP analysis (POST /api/analyze, /api/analyze-study; dicomnode/uploads/analysis.py)
    max_upload_mb: float = Field(50.0, gt=0, le=4096)
    max_zip_entries: int = Field(10000, ge=1)
    max_zip_uncompressed_mb: float = Field(2048.0, gt=0)
    max_compression_ratio: float = Field(100.0, ge=1)
    upload_retention_hours: float = Field(24.0, ge=0)
    # Browser hardening (dicomnode/http/guard.py)
    public_url: str = ""
    login_max_failures: int = Field(5, ge=1, le=1000)
    login_failure_window_seconds: float = Field(300.0, gt=0, le=86400)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if value.strip() and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError("public_url must be an http(s) URL such as https://triage.example")
        return value.strip()


class ModelSettings(_Section):
    package: str = ""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    demo_architecture: str = "efficientnet_b4"
    threads: int = Field(0, ge=0)
    runtime: Runtime = Runtime.AUTO
    max_batch: int = Field(1, ge=1, le=64)
    workers: int = Field(2, ge=1, le=16)
    decode_min_size: int = Field(768, ge=0)
    spinning: bool = False


class DatabaseSettings(_Section):
    url: str = ""
    lease_seconds: float = Field(60.0, gt=0)
    auto_upgrade: bool = True


class DeliverySettings(_Section):
    max_attempts: int = Field(0, ge=0)
    backoff_initial_seconds: float = Field(5.0, gt=0)
    backoff_max_seconds: float = Field(600.0, gt=0)
    timeout_seconds: float = Field(30.0, gt=0)


class OutputsSettings(_Section):
    #: Language of the text burned into the Secondary Capture (banner, footer).
    language: Literal["en", "uk"] = "en"


class OrthancSettings(_Section):
    url: str = ""
    username: str = ""
    password: str = ""
    destination: str = ""
    record_outcome: bool = True
    pull: bool = True
    modalities: list[str] = ["CR", "DX"]
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: list[str]) -> list[str]:
        return [m.strip().upper() for m in value if m.strip()]


class RetentionSettings(_Section):
    """What the nightly clean-up deletes, and when. A `*_days` of 0 keeps that kind forever."""

    enabled: bool = True
    schedule: str = "0 3 * * *"
    spool_days: float = Field(7.0, ge=0)
    results_days: float = Field(30.0, ge=0)
    records_days: float = Field(90.0, ge=0)
    orthanc_results_days: float = Field(0.0, ge=0)
    results_orthanc_url: str = ""
    # The audit trail: six years by default (HIPAA keeps security documentation that long).
    audit_days: float = Field(2190.0, ge=0)
    # Prepared models in data_dir/models not used for this long (dicomnode.model.cache).
    model_cache_days: float = Field(30.0, ge=0)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"not a valid cron expression ({exc})") from None
        return value

    @model_validator(mode="after")
    def _orthanc(self) -> RetentionSettings:
        if self.orthanc_results_days and not self.results_orthanc_url:
            raise ValueError("orthanc_results_days needs results_orthanc_url")
        return self


class Settings(_Section):
    node: NodeSettings = NodeSettings()
    destinations: list[AnyDestination] = []
    api: ApiSettings = ApiSettings()
    model: ModelSettings = ModelSettings()
    database: DatabaseSettings = DatabaseSettings()
    delivery: DeliverySettings = DeliverySettings()
    outputs: OutputsSettings = OutputsSettings()
    orthanc: OrthancSettings = OrthancSettings()
    retention: RetentionSettings = RetentionSettings()

    @model_validator(mode="after")
    def _orthanc_destination(self) -> Settings:
        name = self.orthanc.destination
        if name and name not in {d.name for d in self.destinations}:
            raise ValueError(f"orthanc.destination {name!r} is not a [[destinations]] name")
        return self

    @model_validator(mode="after")
    def _secure(self) -> Settings:
        if not self.api.token and not is_loopback(self.api.host):
            raise ValueError(
                f"api.host = {self.api.host!r} is reachable beyond loopback but api.token is "
                "empty: set a token (or DICOMNODE_API__TOKEN) or bind to 127.0.0.1"
            )
        names = [d.name for d in self.destinations]
        if len(names) != len(set(names)):
            raise ValueError("destinations: names must be unique")
        tls = (self.node.tls_certificate, self.node.tls_private_key)
        if any(tls) and not all(tls):
            raise ValueError("node.tls_certificate and node.tls_private_key go together")
        if self.node.tls_required and not all(tls):
            raise ValueError("node.tls_required needs node.tls_certificate and tls_private_key")
        self._tls_receiving(all(tls))
        return self

    def _tls_receiving(self, has_tls: bool) -> None:
        node = self.node
        if node.tls_client_ca_certificate and not has_tls:
            raise ValueError(
                "node.tls_client_ca_certificate needs node.tls_certificate and tls_private_key "
                "(client certificates are only asked for over TLS)"
            )
        if node.tls_port and not has_tls:
            raise ValueError("node.tls_port needs node.tls_certificate and tls_private_key")
        if node.tls_port and node.tls_port == node.port:
            raise ValueError("node.tls_port must differ from node.port (0: no separate TLS port)")
        if node.tls_port and node.tls_required:
            raise ValueError(
                "node.tls_required = true refuses plaintext, but node.tls_port makes node.port "
                "plaintext: set node.tls_port = 0 (TLS only, on node.port) or "
                "node.tls_required = false (plaintext on node.port, TLS on node.tls_port)"
            )

    @property
    def data_dir(self) -> Path:
        return self.node.data_dir

    @property
    def spool_dir(self) -> Path:
        return self.node.spool_dir or self.node.data_dir / "spool"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.node.data_dir / 'dicomnode.db').resolve()}"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`DICOMNODE_NODE__PORT=11113` → {"node": {"port": "11113"}}; JSON values are parsed."""
    out: dict[str, dict[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        value: Any = raw
        if raw[:1] in ("[", "{"):  # not `in "[{"`: that is True for an empty value
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{name}: not valid JSON ({exc.msg})") from exc
        out.setdefault(section, {})[key] = value
    return out


def load_settings(
    path: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read `path` (optional), apply environment overrides, validate, resolve relative paths
    against the file's folder."""
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        base = path.resolve().parent
        try:
            data = tomllib.loads(path.read_text("utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    env = os.environ if environ is None else environ
    for section, values in _env_overrides(env).items():
        if section == "destinations":
            raise ConfigError("destinations cannot be set per key from the environment")
        current = data.setdefault(section, {})
        if not isinstance(current, dict):
            raise ConfigError(f"{section}: must be a table")
        current.update(values)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    return _resolve_paths(settings, base=base)


#: Path settings of [node]; a relative one is taken from the configuration file's folder.
_NODE_PATHS = ("data_dir", "spool_dir", "tls_certificate", "tls_private_key",
               "tls_ca_certificate", "tls_client_ca_certificate")  # fmt: skip


def _resolve_paths(settings: Settings, *, base: Path) -> Settings:
    """Relative paths (data_dir, spool_dir, TLS files, model.package, an SQLite database.url,
    a DICOMweb destination's CA file)
    are taken from `base`, the configuration file's folder (the working directory without a
    file), so a command run from elsewhere (`dicomnode doctor` in a home folder) finds the
    node's files instead of creating a new `var/` where it stands. The model cache lives in
    data_dir."""
    node = {key: base / value for key in _NODE_PATHS
            if isinstance(value := getattr(settings.node, key), Path)
            and not value.is_absolute()}  # fmt: skip
    package = settings.model.package
    model = {"package": str(base / package)} if package and not Path(package).is_absolute() else {}
    url = settings.database.url  # sqlite:///relative.db (sqlite:////absolute.db)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    relative = path not in ("", ":memory:") and not Path(path).is_absolute()
    database = {"url": f"sqlite:///{base / path}"} if relative else {}
    return settings.model_copy(update={
        "node": settings.node.model_copy(update=node),
        "model": settings.model.model_copy(update=model),
        "database": settings.database.model_copy(update=database),
        "destinations": [d.resolved(base) for d in settings.destinations],
    })  # fmt: skip
    return settings


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"{key}: {err['msg']}")
    return "invalid configuration: " + "; ".join(lines)
