"""`dicomnode doctor`'s model line: a package validated on too few images is a warning with
its numbers (not a failure); the untrained demo says it has no evidence at all."""

from __future__ import annotations

from pathlib import Path

from dicomnode.checks import check_model
from dicomnode.config import Settings
from tests.support.data import TINY_ARCH
from tests.support.models import small_validation_package


def _settings(tmp_path: Path, package: Path | None = None) -> Settings:
    return Settings.model_validate({
        "node": {"data_dir": str(tmp_path / "var")},
        "model": {"package": str(package or ""), "runtime": "torch", "device": "cpu",
                  "demo_architecture": TINY_ARCH},
    })  # fmt: skip


def test_doctor_warns_about_a_small_validation_set_with_the_numbers(tmp_path: Path) -> None:
    package = tmp_path / "model"
    small_validation_package(package)
    check = check_model(_settings(tmp_path, package))
    assert check.status == "warn" and check.ok  # a warning, not a failure
    line = check.line()  # as `dicomnode doctor` prints it
    assert line.startswith("[WARN] model: small validation package loaded (torch)")
    assert "weak validation evidence: validation: 9 images (3 fractures); fewer than 50 " in line
    assert "AUC 0.833, 95 % CI" in line and "is wider than 0.20" in line


def test_doctor_says_the_demo_has_no_evidence(tmp_path: Path) -> None:
    check = check_model(_settings(tmp_path))
    assert check.status == "warn" and "UNTRAINED DEMO" in check.message
    assert "untrained demo: no validation evidence" in check.message
