"""The validation images a package carries for the node's int8 calibration and runtime check:
only the run's validation split, pixels only, nothing with text burned into its pixels, and
only when the export is given the data folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

from dicomnode.model.card import CARD_FILE
from dicomnode.model.select import VALIDATION_DIR
from tests.training.conftest import Synthetic
from training.calibration import burned_in_text, pixels_only, write_validation_images
from training.checkpoint import load_checkpoint
from training.data import load_grayscale, load_split, read_dataset
from training.export import export, main
from training.tracking import dataset_hash
from training.train import RunResult


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _split_pixels(run: RunResult, root: Path, name: str, *, size: int) -> list[np.ndarray]:
    split, _ = load_split(run.out / "split.json")
    return [np.asarray(pixels_only(load_grayscale(root / p), input_size=size))
            for p in split.names(name)]  # fmt: skip


def test_export_carries_validation_images_of_the_validation_split_only(
    trained_run: RunResult, synthetic_folders: Synthetic, tmp_path: Path
) -> None:
    out = tmp_path / "pkg"
    card = export(checkpoint=trained_run.out / "best.pt", out=out, allow_small_validation=True,
                  calibration_data=synthetic_folders.root, calibration_images=10)  # fmt: skip
    written = sorted((out / VALIDATION_DIR).iterdir())
    assert [p.name for p in written][:4] == [
        "000-fracture.png",
        "001-fracture.png",
        "002-normal.png",
        "003-normal.png",
    ]
    assert len(written) == 10
    # the node's halves (every second image) are balanced between the classes
    for half in (written[0::2], written[1::2]):
        assert sorted(p.name.split("-")[1] for p in half).count("fracture.png") in (2, 3)
    assert card.metrics["validation_images"]["images"] == 10
    assert card.metrics["validation_images"]["fracture"] == 6
    val = _split_pixels(trained_run, synthetic_folders.root, "val", size=card.input_size)
    others = _split_pixels(trained_run, synthetic_folders.root, "train", size=card.input_size)
    others += _split_pixels(trained_run, synthetic_folders.root, "test", size=card.input_size)
    for path in written:
        picture = Image.open(path)
        assert picture.mode == "L" and max(picture.size) <= card.input_size
        assert not {k for k in picture.info if k not in ("dpi", "gamma")}  # no text chunks
        pixels = _pixels(path)
        assert any(v.shape == pixels.shape and np.array_equal(v, pixels) for v in val)
        assert not any(o.shape == pixels.shape and np.array_equal(o, pixels) for o in others)

    # Exported again without the data folder: the package carries no images any more.
    assert main(["--checkpoint", str(trained_run.out / "best.pt"), "--out", str(out), "--force",
                 "--allow-small-validation"]) == 0  # fmt: skip
    assert not (out / VALIDATION_DIR).exists()


def test_the_wrong_data_folder_is_refused(
    trained_run: RunResult, synthetic_folders: Synthetic, tmp_path: Path, capsys
) -> None:
    other = Path(shutil.copytree(synthetic_folders.root, tmp_path / "other"))
    victim = next(p for p in sorted((other / "normal").iterdir()) if p.suffix == ".png")
    victim.unlink()
    out = tmp_path / "pkg"
    assert main(["--checkpoint", str(trained_run.out / "best.pt"), "--out", str(out),
                 "--allow-small-validation", "--calibration-data", str(other)]) == 2  # fmt: skip
    assert "not the data this model was trained on" in capsys.readouterr().err
    assert not (out / VALIDATION_DIR).exists()
    assert not (out / CARD_FILE).exists()  # nothing the node would load


def test_images_that_may_carry_burned_in_text_are_never_written(
    trained_run: RunResult, synthetic_folders: Synthetic, tmp_path: Path
) -> None:
    data = Path(shutil.copytree(synthetic_folders.root, tmp_path / "data"))
    state = load_checkpoint(trained_run.out / "best.pt")
    split, _ = load_split(trained_run.out / "split.json")
    dicoms = [data / p for p in split.names("val") if burned_in_text(data / p) is False
              and pydicom.misc.is_dicom(data / p)]  # fmt: skip
    assert dicoms, "the synthetic validation split holds DICOM files"
    originals = {}
    for index, path in enumerate(dicoms):
        ds = pydicom.dcmread(path)
        originals[path.name] = np.asarray(
            pixels_only(load_grayscale(path), input_size=state["model_info"]["input_size"])
        )
        if index % 2:
            ds.BurnedInAnnotation = "YES"
        else:
            del ds.BurnedInAnnotation  # unknown: may have text
        ds.save_as(path)
    state["data"]["data_sha256"] = dataset_hash(read_dataset(data))
    package = tmp_path / "pkg"
    written = write_validation_images(state=state, data=data, package=package, count=1000,
                                      split_file=trained_run.out / "split.json")  # fmt: skip
    assert written.skipped_burned_in == len(dicoms)
    assert written.images == len(split.names("val")) - len(dicoms)
    for path in (package / VALIDATION_DIR).iterdir():
        pixels = _pixels(path)
        assert not any(v.shape == pixels.shape and np.array_equal(v, pixels)
                       for v in originals.values())  # fmt: skip
