"""Write node configuration files for tests (ephemeral ports, a data dir in tmp_path)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.support.data import TINY_ARCH
from tests.support.peers import free_port


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_node_config(
    directory: Path,
    *,
    destinations: Sequence[Mapping[str, Any]] = (),
    node: Mapping[str, Any] | None = None,
    api: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    delivery: Mapping[str, Any] | None = None,
    extra_sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """A complete config for a test node: tiny demo model, stable after 1 s, fast retries.

    Returns the path; the chosen ports are in the file (`read_ports`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    sections: dict[str, dict[str, Any]] = {
        "node": {"ae_title": "DICOMNODE", "host": "127.0.0.1", "port": free_port(),
                 "data_dir": str(directory / "var"), "study_stable_seconds": 1,
                 "min_free_mb": 0},
        "api": {"host": "127.0.0.1", "port": free_port()},
        "model": {"demo_architecture": TINY_ARCH, "device": "cpu"},
        "delivery": {"backoff_initial_seconds": 0.5, "backoff_max_seconds": 2},
    }  # fmt: skip
    for name, values in (("node", node), ("api", api), ("model", model), ("delivery", delivery)):
        sections[name].update(values or {})
    for name, values in (extra_sections or {}).items():
        sections.setdefault(name, {}).update(values)
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for dest in destinations:
        lines.append("[[destinations]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in dest.items()]
        lines.append("")
    path = directory / "dicomnode.toml"
    path.write_text("\n".join(lines))
    return path


def read_ports(config: Path) -> tuple[int, int]:
    """(DICOM port, API port) of a config written by `write_node_config`."""
    import tomllib

    data = tomllib.loads(config.read_text())
    return int(data["node"]["port"]), int(data["api"]["port"])


def orthanc_destination(orthanc: Any, name: str = "orthanc") -> dict[str, Any]:
    return {"name": name, "ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
