"""The administration guide documents every setting and every metric the node has.

The configuration reference is generated from `dicomnode.config` by
docs/tools/gen_config_reference.py; these tests fail when a setting is added, removed or its
default changed without regenerating it, or when a metric is not explained.
"""

from __future__ import annotations

import re
from pathlib import Path

from dicomnode.config import Settings
from dicomnode.destinations import Destination, DicomwebDestination
from dicomnode.metrics import Metrics
from tests.support.docs import check_generated, generated_section

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "administration.md"


def documented_keys(text: str) -> set[str]:
    block = generated_section(text, "config-reference")
    return set(re.findall(r"^\| `([a-z_\[\].]+)` \|", block, re.MULTILINE))


def settings_keys() -> set[str]:
    keys = set()
    for section, field in Settings.model_fields.items():
        models = (
            [Destination, DicomwebDestination] if section == "destinations" else [field.annotation]
        )
        prefix = "destinations[]." if section == "destinations" else f"{section}."
        keys |= {prefix + key for model in models for key in model.model_fields}  # type: ignore[union-attr]
    return keys


def test_every_setting_is_in_the_configuration_reference():
    documented = documented_keys(DOC.read_text("utf-8"))
    expected = settings_keys()
    assert expected - documented == set(), "settings missing from docs/administration.md"
    assert documented - expected == set(), "documented settings that do not exist"


def test_a_missing_setting_would_be_noticed():
    text = DOC.read_text("utf-8")
    edited = text.replace("| `node.min_free_mb` |", "| (removed) |")
    assert edited != text
    assert "node.min_free_mb" in settings_keys() - documented_keys(edited)


def test_every_environment_variable_is_named():
    text = generated_section(DOC.read_text("utf-8"), "config-reference")
    for key in settings_keys():
        if key.startswith("destinations"):
            continue
        section, name = key.split(".")
        assert f"`DICOMNODE_{section.upper()}__{name.upper()}`" in text, key


def test_configuration_reference_is_current():
    run = check_generated("gen_config_reference.py")
    assert run.returncode == 0, run.stderr + run.stdout


def exported_metric_names() -> set[str]:
    """Names as Prometheus scrapes them: counters carry the `_total` suffix."""
    return {
        f"{m.name}_total" if m.type == "counter" else m.name for m in Metrics().registry.collect()
    }


def documented_metric_names(text: str) -> set[str]:
    return set(re.findall(r"^\| `(dicomnode_[a-z_]+)(?:\{[a-z_,]+\})?` \|", text, re.MULTILINE))


def test_every_metric_is_explained_in_the_metrics_table():
    text = DOC.read_text("utf-8")
    exported = exported_metric_names()
    assert len(exported) >= 10
    assert exported == documented_metric_names(text)
