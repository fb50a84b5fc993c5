"""`[[destinations]] objects`: which of SR, SC and GSPS a destination is sent (default all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomnode.config import ConfigError, load_settings
from dicomnode.work.results import destinations_taking

ENTRY = '[[destinations]]\nname="{name}"\nae_title="A"\nhost="h"\nport=1\n'


def _settings(tmp_path: Path, *entries: str):
    path = tmp_path / "c.toml"
    path.write_text("".join(entries))
    return load_settings(path, environ={})


def test_default_is_every_object_and_a_list_chooses(tmp_path: Path) -> None:
    settings = _settings(tmp_path, ENTRY.format(name="pacs"),
                         ENTRY.format(name="old") + 'objects = ["sr", "sc"]\n')  # fmt: skip
    assert settings.destinations[0].objects == ("sr", "sc", "gsps")
    assert destinations_taking(settings.destinations, "gsps") == ["pacs"]
    assert destinations_taking(settings.destinations, "sr") == ["pacs", "old"]


@pytest.mark.parametrize("objects", ['["seg"]', "[]"])
def test_unknown_or_no_object_is_refused_naming_the_key(tmp_path: Path, objects: str) -> None:
    with pytest.raises(ConfigError, match="objects"):
        _settings(tmp_path, ENTRY.format(name="pacs") + f"objects = {objects}\n")
