"""The Orthanc plugin's pure parts (orthanc/dicomnode_router.py), outside Orthanc.

The plugin runs in Orthanc's interpreter; here it is imported without the `orthanc` module,
so only its selection, configuration, backoff, pending list and Explorer text are exercised
(the plugin itself runs for real in tests/integration/test_orthanc_routing.py).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.peers import load_orthanc_config

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "orthanc" / "dicomnode_router.py"


@pytest.fixture(scope="module")
def router():
    spec = importlib.util.spec_from_file_location("dicomnode_router", PLUGIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    assert module.orthanc is None  # not inside Orthanc: nothing registered
    return module


def _series(modality, manufacturer, *instances):
    tags = {"Modality": modality, "Manufacturer": manufacturer}
    return {"MainDicomTags": tags, "Instances": list(instances)}


def test_shipped_configuration_is_push_of_cr_and_dx(router):
    config = router.read_config(load_orthanc_config(REPO / "orthanc" / "orthanc.json"))
    assert config.mode == "push" and config.modality == "DICOMNODE"
    assert config.modalities == ("CR", "DX")
    assert config.retry_initial_seconds > 0 and config.explorer_extension


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"Mode": "carrier-pigeon"}, "push or pull"),
        ({"Modalities": "CR"}, "list of strings"),
        ({"RetryInitialSeconds": 0}, "positive"),
        ({"Mode": "pull", "NodeUrl": ""}, "NodeUrl"),
        ({"Surprise": 1}, "Surprise"),
    ],
)
def test_bad_configuration_is_named(router, section, message):
    with pytest.raises(router.ConfigurationError, match=message):
        router.read_config({"DicomNode": section})


def test_defaults_without_a_section_and_normalised_values(router):
    assert router.read_config({}).modalities == ("CR", "DX")
    config = router.read_config(
        {"DicomNode": {"Mode": "PULL", "Modalities": [" dx "], "NodeUrl": "http://n:8000/"}}
    )
    assert config.mode == "pull" and config.modalities == ("DX",)
    assert config.node_url == "http://n:8000"


def test_selection_keeps_radiographs_and_never_the_nodes_output(router):
    series = [
        _series("CR", "FUJI", "cr-1", "cr-2"),
        _series("DX", "", "dx-1"),
        _series("CT", "SIEMENS", "ct-1"),
        _series("SR", "dicomnode", "sr-1"),
        _series("CR", "dicomnode", "own-sc"),  # the node's SC copies the source modality
        _series("cr", "Agfa", "sc-cr"),  # radiographic SC, modality CR
    ]
    chosen = router.select_instances(series, modalities=("CR", "DX"), routed={"cr-2"})
    assert chosen == ["cr-1", "dx-1", "sc-cr"]
    assert router.select_instances(series, modalities=("CT",), routed=set()) == ["ct-1"]


def test_backoff_doubles_and_is_capped(router):
    delays = [router.backoff_seconds(n, initial=5, maximum=60) for n in range(1, 7)]
    assert delays == [5, 10, 20, 40, 60, 60]


def test_pending_studies_survive_a_round_trip_and_come_due_in_order(router):
    config = router.RouterConfig(retry_initial_seconds=10, retry_max_seconds=100)
    pending = router.Pending()
    assert pending.add("a", 100.0) and pending.add("b", 101.0)
    assert not pending.add("a", 102.0)
    assert pending.due(101.0) == ["a", "b"]
    attempts, delay = pending.failed("a", 101.0, config)
    assert (attempts, delay) == (1, 10.0)
    assert pending.due(105.0) == ["b"] and pending.next_due() == 101.0
    restored = router.Pending.loads(pending.dumps(), 200.0)
    assert sorted(restored.items) == ["a", "b"] and restored.due(200.0)
    assert router.Pending.loads("not json", 0.0).items == {}


def test_outcome_text_as_the_explorer_shows_it(router):
    meta = {"AIOutcome": "positive", "AIProbability": "0.8712",
            "AIModel": "demo-efficientnet_b4 (UNTRAINED DEMO)"}  # fmt: skip
    assert router.outcome_text(meta) == "AI triage: fracture suspected 0.87 (UNTRAINED DEMO)"
    meta = {"AIOutcome": "negative", "AIProbability": "0.02", "AIModel": "fracture-b4 1.0"}
    assert router.outcome_text(meta) == "AI triage: no fracture detected 0.02"
    assert router.outcome_text({}) is None


def test_explorer_javascript_computes_the_same_text(router, tmp_path):
    """Run the extension's text function in Node.js and compare with the Python version."""
    js = router.EXPLORER_JS
    assert "__WORDS__" not in js and "__UNTRAINED__" not in js
    start = js.index("  var WORDS")
    end = js.index("  $('#study')")
    cases = [
        {"AIOutcome": "positive", "AIProbability": "0.8712", "AIModel": "x (UNTRAINED DEMO)"},
        {"AIOutcome": "doubt", "AIProbability": "0.5", "AIModel": "trained 1.0"},
        {"AIOutcome": "negative", "AIProbability": "n/a", "AIModel": ""},
        {},
    ]
    script = tmp_path / "t.js"
    script.write_text(js[start:end] + f"\nconsole.log(JSON.stringify({json.dumps(cases)}"
                      ".map(dicomnodeOutcomeText)));\n")  # fmt: skip
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [router.outcome_text(c) for c in cases]
