"""docker-compose.scale.yml cannot run here (no Docker engine): check what it references."""

import json
import re
from pathlib import Path

import yaml

from dicomnode.config import load_settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.scale.yml"


def _compose():
    return yaml.safe_load(COMPOSE.read_text())


def _env(service):
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)


def _resolve(value):
    """Compose `${VAR:-default}` / `${VAR:?msg}` → the default (or a placeholder)."""
    return re.sub(r"\$\{[A-Z_]+:?[-?]([^}]*)\}", lambda m: m.group(1) or "x", value)


def test_scale_profile_has_postgres_two_nodes_and_a_load_balancer():
    services = _compose()["services"]
    scale = {name for name, s in services.items() if "scale" in s.get("profiles", [])}
    # besides its own services, the override only re-points the base Orthanc at the load
    # balancer and puts the base single node into another profile
    assert set(services) - scale == {"orthanc", "dicomnode"}
    assert services["dicomnode"]["profiles"] == ["single"]
    modalities = json.loads(services["orthanc"]["environment"]["ORTHANC__DICOM_MODALITIES"])
    assert modalities["DICOMNODE"]["Host"] == "dicomnode-lb"
    assert modalities["DICOMNODE"]["Port"] == 11112
    nodes = {
        n: s for n, s in services.items() if s.get("command", [""])[:2] == ["dicomnode", "serve"]
    }
    assert len(nodes) >= 2
    ids = {_env(s)["DICOMNODE_NODE__NODE_ID"] for s in nodes.values()}
    assert len(ids) == len(nodes)  # unique node ids
    for service in nodes.values():
        url = _env(service)["DICOMNODE_DATABASE__URL"]
        assert url.startswith("postgresql+psycopg://") and "@dicomnode-db:5432/" in url
        assert "${DICOMNODE_API_TOKEN:?" in _env(service)["DICOMNODE_API__TOKEN"]
    spools = {v for s in nodes.values() for v in s["volumes"] if v.startswith("spool:")}
    assert len(spools) == 1  # one shared spool volume, same mount point everywhere
    assert services["dicomnode-db"]["image"].startswith("postgres:15")


def test_every_referenced_file_exists_and_agrees_with_the_node_config():
    services = _compose()["services"]
    for service in services.values():
        build = service.get("build")
        if build and (REPO / "docker-compose.yml").exists():  # the base file brings the Dockerfile
            assert (REPO / build["context"] / build["dockerfile"]).is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{source} referenced but missing"
    config_path = REPO / "configs" / "scale" / "dicomnode.toml"
    node = services["dicomnode-a"]
    env = {k: _resolve(v) for k, v in _env(node).items()}
    settings = load_settings(config_path, environ=env)
    assert settings.database.url.startswith("postgresql+psycopg://")
    assert not settings.database.auto_upgrade  # dicomnode-migrate upgrades first
    [spool_mount] = [v for v in node["volumes"] if v.startswith("spool:")]
    assert spool_mount.split(":")[1] == str(settings.spool_dir)
    published = {p.split(":")[1] for p in node["ports"]}
    assert str(settings.api.port) in published
    # the load balancer forwards to every node's DICOM port
    haproxy = (REPO / "configs" / "scale" / "haproxy.cfg").read_text()
    backends = re.findall(r"^\s*server \S+ (\S+):(\d+)", haproxy, re.M)
    nodes = {n for n, s in services.items() if s.get("command", [""])[:2] == ["dicomnode", "serve"]}
    assert {host for host, _ in backends} == nodes
    assert {int(port) for _, port in backends} == {settings.node.port}
    lb_ports = services["dicomnode-lb"]["ports"]
    assert any(p.endswith(f":{settings.node.port}") for p in lb_ports)
    migrate = services["dicomnode-migrate"]
    assert migrate["command"][:3] == ["dicomnode", "db", "upgrade"]
    assert node["depends_on"]["dicomnode-migrate"]["condition"] == "service_completed_successfully"


def test_the_readme_documents_the_scale_profile():
    readme = (REPO / "README.md").read_text()
    assert (
        "docker compose -f docker-compose.yml -f docker-compose.scale.yml --profile scale up"
        in (readme)
    )
