"""dicomnode.pacs (outcome, pull, queue): the version switch, what is written on a study, the
pull selection and the persistent work queue."""

from __future__ import annotations

import json

import httpx
import pytest

from dicomnode.config import ConfigError, load_settings
from dicomnode.pacs.outcome import LABELS, OutcomeRecord, parse_version, supports_labels
from dicomnode.pacs.pull import is_orthanc_id, radiograph_instances
from dicomnode.pacs.queue import WorkQueue


@pytest.mark.parametrize(
    ("version", "labels"),
    [("1.10.1", False), ("1.11.3", False), ("1.9.7", False), ("1.12.0", True),
     ("1.12.4", True), ("2.0", True), ("mainline", True), ("", True)],
)  # fmt: skip
def test_labels_are_used_from_orthanc_1_12(version, labels):
    assert supports_labels(version) is labels


def test_parse_version():
    assert parse_version("1.10.1") == (1, 10, 1)
    assert parse_version("1.12") == (1, 12, 0)
    assert parse_version("mainline-abc") is None


def test_outcome_record_metadata_and_label():
    record = OutcomeRecord(outcome="positive", probability=0.87123, model="m (UNTRAINED DEMO)")
    assert record.metadata() == {"AIOutcome": "positive", "AIProbability": "0.8712",
                                 "AIModel": "m (UNTRAINED DEMO)"}  # fmt: skip
    assert record.label == "AI_POSITIVE"
    assert {OutcomeRecord(outcome=o, probability=0, model="").label for o in LABELS} == set(
        LABELS.values()
    )


def test_pull_selection_skips_other_modalities_and_own_output():
    series = [
        {"MainDicomTags": {"Modality": "CR"}, "Instances": ["a"]},
        {"MainDicomTags": {"Modality": "CT"}, "Instances": ["b"]},
        {"MainDicomTags": {"Modality": "DX", "Manufacturer": "dicomnode"}, "Instances": ["c"]},
        {"MainDicomTags": {"Modality": "dx", "Manufacturer": "Agfa"}, "Instances": ["d"]},
    ]
    assert radiograph_instances(series, ["CR", "DX"]) == ["a", "d"]


def test_orthanc_ids():
    assert is_orthanc_id("0891df59-296d9691-b35909ce-f0a011db-94aa5d1c")
    for bad in ("../studies", "0891DF59-296d9691-b35909ce-f0a011db-94aa5d1c", "1.2.3", ""):
        assert not is_orthanc_id(bad)


def test_work_queue_persists_backs_off_and_forgets_done(tmp_path):
    path = tmp_path / "q.json"
    queue = WorkQueue(path, initial=30, maximum=60)
    assert queue.add(["a", "b", "a"]) == 2 and queue.add(["b"]) == 0
    assert queue.due() == "a"
    assert queue.failed("a") == (1, 30.0)
    assert queue.due() == "b"  # a is backing off
    queue.done("b")
    assert queue.due() is None and len(queue) == 1
    again = WorkQueue(path, initial=30, maximum=60)  # a restart
    assert "a" in again and again.failed("a") == (2, 60.0)
    assert json.loads(path.read_text())["a"]["attempts"] == 2
    path.write_text("{broken")
    assert len(WorkQueue(path, initial=1, maximum=1)) == 0


def test_orthanc_settings(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[[destinations]]\nname="pacs"\nae_title="ORTHANC"\nhost="127.0.0.1"\nport=4242\n'
        '[orthanc]\nurl="http://127.0.0.1:8042/"\ndestination="pacs"\nmodalities=[" dx"]\n'
    )
    s = load_settings(cfg, environ={})
    assert s.orthanc.url == "http://127.0.0.1:8042" and s.orthanc.modalities == ["DX"]
    with pytest.raises(ConfigError, match=r"orthanc\.destination"):
        load_settings(cfg, environ={"DICOMNODE_ORTHANC__DESTINATION": "elsewhere"})
    with pytest.raises(ConfigError, match=r"orthanc\.url"):
        load_settings(None, environ={"DICOMNODE_ORTHANC__URL": "ftp://x"})


def test_an_empty_environment_value_is_an_empty_string():
    # docker-compose.yml passes DICOMNODE_DATABASE__URL="" when PostgreSQL is not used.
    s = load_settings(None, environ={"DICOMNODE_DATABASE__URL": ""})
    assert s.database.url == "" and s.database_url.startswith("sqlite:///")


def _client_auth(settings, url):
    from dicomnode.pacs.orthanc import api_from_settings

    with api_from_settings(settings, url=url) as api:
        request = api.client.build_request("GET", f"{api.client.url}/system")
        return api.client._build_request_auth(request), api.client.timeout.read


@pytest.mark.parametrize(
    ("results_url", "authenticated"),
    [("http://127.0.0.1:8042", True), ("http://127.0.0.1:8042/", True),
     ("http://127.0.0.1:80", False), ("https://127.0.0.1:8042", False),
     ("http://pacs.example:8042", False)],
)  # fmt: skip
def test_retention_uses_the_orthanc_credentials_only_on_that_orthanc(results_url, authenticated):
    settings = load_settings(environ={
        "DICOMNODE_ORTHANC__URL": "http://127.0.0.1:8042", "DICOMNODE_ORTHANC__USERNAME": "node",
        "DICOMNODE_ORTHANC__PASSWORD": "secret", "DICOMNODE_ORTHANC__TIMEOUT": "7"})  # fmt: skip
    auth, timeout = _client_auth(settings, results_url)
    assert timeout == 7
    if authenticated:
        assert auth._auth_header == httpx.BasicAuth("node", "secret")._auth_header
    else:
        assert not isinstance(auth, httpx.BasicAuth)


def test_credentials_in_the_results_url_are_kept():
    settings = load_settings(environ={"DICOMNODE_ORTHANC__URL": "http://127.0.0.1:8042",
                                      "DICOMNODE_ORTHANC__USERNAME": "node",
                                      "DICOMNODE_ORTHANC__PASSWORD": "secret"})  # fmt: skip
    auth, _ = _client_auth(settings, "http://other:pw@127.0.0.1:8042")
    assert auth._auth_header == httpx.BasicAuth("other", "pw")._auth_header
