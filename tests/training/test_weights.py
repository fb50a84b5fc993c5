"""Initial weights: `--init-weights FILE` and `--pretrained` from the local cache, never a download.

A fake Hugging Face cache holds a tiny state dict where timm keeps its ImageNet weights; an empty
cache is a clear error (not a silent random start, not a download attempt).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from tests.training.conftest import TINY_CONFIG
from training.config import ConfigError
from training.model import build_model, cached_pretrained_file
from training.synthetic import write_dataset
from training.train import main


@pytest.fixture(autouse=True)
def offline_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Empty, private caches and no network for timm/Hugging Face/torch hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf" / "hub"


def _reference_state(seed: int = 123) -> dict[str, torch.Tensor]:
    """A state dict of the tiny architecture with a 1000-class ImageNet head, as timm's is."""
    torch.manual_seed(seed)
    from dicomnode.model.classifier import create_model

    model = create_model(TINY_CONFIG.architecture, num_classes=1000)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _assert_backbone_is(model: torch.nn.Module, reference: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    shared = [k for k in own if k in reference and own[k].shape == reference[k].shape]
    assert len(shared) >= len(own) - 2  # all but the new 2-class head
    for key in shared:
        assert torch.equal(own[key], reference[key]), key
    head = [k for k in own if k not in shared]
    assert head and all(own[k].shape[0] == 2 for k in head)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_init_weights_file_is_loaded(tmp_path: Path, suffix: str) -> None:
    reference = _reference_state()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": reference}, path)
    else:
        save_file(reference, str(path))
    config = dataclasses.replace(TINY_CONFIG, pretrained_file=str(path))
    model, init = build_model(config)
    assert init.startswith(f"file backbone{suffix}")
    _assert_backbone_is(model, reference)


def test_init_weights_errors_are_clear(tmp_path: Path) -> None:
    missing = dataclasses.replace(TINY_CONFIG, pretrained_file=str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="does not exist"):
        build_model(missing)
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(3)}, str(other))
    with pytest.raises(ConfigError, match="do not fit"):
        build_model(dataclasses.replace(TINY_CONFIG, pretrained_file=str(other)))
    with pytest.raises(ConfigError, match="exclude each other"):
        dataclasses.replace(TINY_CONFIG, pretrained=True, pretrained_file=str(other))


def test_pretrained_comes_from_the_local_hugging_face_cache(offline_caches: Path) -> None:
    """Where timm keeps its weights (HF hub cache layout: refs/main → snapshots/<rev>/)."""
    repo_id = get_pretrained_cfg(TINY_CONFIG.architecture).hf_hub_id
    repo = offline_caches / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    reference = _reference_state(seed=7)
    save_file(reference, str(snapshot / "model.safetensors"))

    assert cached_pretrained_file(TINY_CONFIG.architecture)[0] == snapshot / "model.safetensors"
    model, init = build_model(dataclasses.replace(TINY_CONFIG, pretrained=True))
    assert init.startswith("imagenet (timm cache")
    _assert_backbone_is(model, reference)


@pytest.mark.parametrize("architecture", [TINY_CONFIG.architecture, "efficientnet_b4"])
def test_pretrained_without_cached_weights_is_a_clear_error(architecture: str) -> None:
    config = dataclasses.replace(TINY_CONFIG, architecture=architecture, pretrained=True)
    with pytest.raises(ConfigError) as raised:
        build_model(config)
    message = str(raised.value)
    assert "not on this machine" in message and "--init-weights" in message
    assert "nothing is downloaded" in message


def test_cli_pretrained_without_cache_exits_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    write_dataset(data, layout="folders", n=16, size=32, seed=4)
    config = tmp_path / "c.toml"
    config.write_text(f'architecture = "{TINY_CONFIG.architecture}"\nimage_size = 32\n')
    argv = ["--data", str(data), "--out", str(tmp_path / "run"), "--config", str(config)]
    assert main([*argv, "--pretrained"]) == 2
    assert "not on this machine" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one or the other
        main([*argv, "--pretrained", "--init-weights", str(tmp_path / "w.pt")])
