"""docker-compose.yml cannot run here (no Docker engine): check what it references instead.

Every file it mounts or builds from exists, the Dockerfile copies only what exists, and ports,
hosts and AE titles agree between the compose file, orthanc/orthanc.json (with the compose
environment applied the way the Orthanc team's image applies it) and configs/docker.toml.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from dicomnode.config import load_settings
from dicomnode.pacs.outcome import METADATA_MODEL, METADATA_OUTCOME, METADATA_PROBABILITY
from tests.support.peers import load_orthanc_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: _interpolate(str(v)) for k, v in env.items()}


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message}: the default, or a placeholder."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        return rest if op == ":-" else f"<{name}>"

    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def _camel(token: str) -> str:
    return "".join(part.capitalize() for part in token.lower().split("_"))


def orthanc_effective_config(service: dict[str, Any]) -> dict[str, Any]:
    """orthanc/orthanc.json with the service's ORTHANC__A__B env applied (JSON values parsed,
    dicts merged), as the image's configuration generator does."""
    config = load_orthanc_config(REPO / "orthanc" / "orthanc.json")
    for name, raw in _env(service).items():
        if not name.startswith("ORTHANC__"):
            continue
        path = [_camel(t) for t in name[len("ORTHANC__") :].split("__")]
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = config
        for key in path[:-1]:
            target = target.setdefault(key, {})
        if isinstance(value, dict) and isinstance(target.get(path[-1]), dict):
            _merge(target[path[-1]], value)
        else:
            target[path[-1]] = value
    return config


def _merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _container_ports(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path (or named volume)."""
    out = {}
    for volume in service.get("volumes", []):
        host, container = str(volume).split(":")[:2]
        out[container] = host
    return out


def test_every_referenced_file_exists_and_named_volumes_are_declared(compose):
    declared = set(compose.get("volumes", {}))
    for name, service in compose["services"].items():
        for container, host in _mounts(service).items():
            if host.startswith((".", "/")):
                assert (REPO / host).exists(), f"{name}: {host} (mounted at {container}) missing"
            else:
                assert host in declared, f"{name}: volume {host} is not declared"
        build = service.get("build")
        if build:
            context = REPO / build.get("context", ".")
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
        for dependency in service.get("depends_on", {}):
            assert dependency in compose["services"], f"{name} depends on {dependency}"


def test_dockerfile_copies_only_what_exists():
    text = (REPO / "Dockerfile").read_text()
    copied = re.findall(r"^COPY\s+(.+)$", text, flags=re.MULTILINE)
    assert copied
    for line in copied:
        *sources, _destination = line.split()
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile copies missing {source}"
    assert "EXPOSE 11112 8000" in text


def test_orthanc_service_runs_the_router_plugin_with_the_repos_configuration(compose):
    service = compose["services"]["orthanc"]
    assert service["image"].startswith("orthancteam/orthanc:")
    config = orthanc_effective_config(service)
    mounts = _mounts(service)
    script = config["PythonScript"]
    assert mounts.get(script) == "./orthanc/dicomnode_router.py"
    assert any(c.startswith("/etc/orthanc/") and h == "./orthanc/orthanc.json"
               for c, h in mounts.items())  # fmt: skip
    assert _env(service)["PYTHON_PLUGIN_ENABLED"] == "true"
    assert mounts[config["StorageDirectory"]] in compose["volumes"]
    assert config["AuthenticationEnabled"] is True and config["RemoteAccessAllowed"] is True
    for name in (METADATA_OUTCOME, METADATA_PROBABILITY, METADATA_MODEL, "DicomNodeRouted"):
        assert name in config["UserMetadata"]
    assert {config["DicomPort"], config["HttpPort"]} <= _container_ports(service)
    # The postgres profile is optional: off unless asked for.
    assert compose["services"]["postgres"]["profiles"] == ["postgres"]
    assert _env(service)["POSTGRESQL_PLUGIN_ENABLED"] == "false"


def test_ports_hosts_and_ae_titles_agree(compose):
    orthanc_service = compose["services"]["orthanc"]
    node_service = compose["services"]["dicomnode"]
    orthanc = orthanc_effective_config(orthanc_service)
    mounts = _mounts(node_service)
    node_config = REPO / mounts["/etc/dicomnode/dicomnode.toml"]
    settings = load_settings(node_config, environ={
        k: v for k, v in _env(node_service).items() if k.startswith("DICOMNODE_")
    })  # fmt: skip
    assert mounts[str(settings.node.data_dir)] in compose["volumes"]

    # Orthanc → node (push): the DICOMNODE modality is the node's service, AE title and port.
    modality = orthanc["DicomModalities"][orthanc["DicomNode"]["Modality"]]
    assert modality["AET"] == settings.node.ae_title
    assert modality["Host"] == "dicomnode" and modality["Port"] == settings.node.port
    assert settings.node.port in _container_ports(node_service)
    # Orthanc → node (pull): the node's API, with the node's token.
    node_url = urlparse(orthanc["DicomNode"]["NodeUrl"])
    assert (node_url.hostname, node_url.port) == ("dicomnode", settings.api.port)
    assert settings.api.port in _container_ports(node_service)
    assert orthanc["DicomNode"]["NodeToken"] == settings.api.token == "<DICOMNODE_API_TOKEN>"
    # Node → Orthanc: results by C-STORE to Orthanc's AE title and port, outcome over REST.
    [destination] = settings.destinations
    assert (destination.host, destination.port) == ("orthanc", orthanc["DicomPort"])
    assert destination.ae_title == orthanc["DicomAet"]
    assert settings.orthanc.destination == destination.name
    rest = urlparse(settings.orthanc.url)
    assert (rest.hostname, rest.port) == ("orthanc", orthanc["HttpPort"])
    assert settings.orthanc.username in orthanc["RegisteredUsers"]
    assert settings.orthanc.password == "<ORTHANC_PASSWORD>"
    assert orthanc["RegisteredUsers"][settings.orthanc.username] == "<ORTHANC_PASSWORD>"
    assert orthanc["DicomAet"] in settings.node.allowed_calling_ae_titles


def test_native_orthanc_json_agrees_with_the_shipped_node_defaults():
    """Without Docker: orthanc/orthanc.json next to the node run with configs/dicomnode.toml."""
    orthanc = load_orthanc_config(REPO / "orthanc" / "orthanc.json")
    settings = load_settings(REPO / "configs" / "dicomnode.toml", environ={})
    modality = orthanc["DicomModalities"][orthanc["DicomNode"]["Modality"]]
    assert (modality["AET"], modality["Port"]) == (settings.node.ae_title, settings.node.port)
    assert urlparse(orthanc["DicomNode"]["NodeUrl"]).port == settings.api.port
    assert orthanc["Plugins"] == ["/usr/share/orthanc/plugins/libOrthancPython.so"]
    assert (REPO / "orthanc" / orthanc["PythonScript"]).is_file()
