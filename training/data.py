"""Labelled radiographs on disk, the reproducible split, and the torch data set.

Two layouts are read:

* FracAtlas: `ROOT/dataset.csv` with `image_id` and `fractured` (0/1) columns, images in
  `ROOT/images/Fractured` and `ROOT/images/Non_fractured`.
* Folders: `ROOT/<class>/**/*.{png,jpg,jpeg,bmp,tif,tiff,dcm,dicom}` (and DICOM files without
  a suffix), where the class folder name gives the label (fracture/fractured/positive/
  abnormal/1 vs normal/non_fractured/negative/0), or `positive_class` names the fracture
  folder and every other folder is normal.

Every image is read with `dicomnode.imaging.preprocess.load_image` (DICOM through the node's own
`to_grayscale`) and turned into the network input by `preprocess.to_model_input`, the same two
functions the node uses, so training and serving cannot drift apart.

The split (train/val/test) is stratified by label with a fixed seed and written to a JSON file
that later runs reuse, so every run of a data set is trained and tested on the same images.
It is group-aware: images of one group (patient) never straddle two splits. `data.group_by`
says where the patient of an image comes from:

* `"patient-id"`: the DICOM PatientID (DICOM files only; other files are their own group);
* `"subfolder"`: `ROOT/<class>/<patient>/...` (folder layout);
* the name of a `dataset.csv` column holding a patient id (FracAtlas layout);
* a patient list, `"patients.csv"` (any name ending in .csv, relative to ROOT or absolute):
  columns `patient_id` and `image_id` (file name) or `path` (relative to ROOT), every image
  listed (see `training.patients`). This is how JPEG/PNG data of either layout gets a
  patient-level split.

FracAtlas as published has no patient identifiers (its `dataset.csv` has none, its JPEGs no
header): without a patient list the split is by image, images of one patient may land in
different splits, and test metrics may be optimistic. The split file and the model card say
so. FracAtlas's body-part columns (hand, leg, hip, shoulder) are kept per image, so the model
card can say which body parts the model was trained on.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from pydicom.errors import InvalidDicomError

from dicomnode.imaging import preprocess
from training.augment import AugmentConfig, augment_image
from training.patients import (
    PatientListError,
    is_patient_csv,
    patient_csv_path,
    patients_of,
    read_patient_csv,
)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ""})
POSITIVE_NAMES = frozenset(
    {"fracture", "fractured", "fractures", "positive", "pos", "abnormal", "yes", "1"}
)
NEGATIVE_NAMES = frozenset(
    {
        "normal",
        "non_fractured",
        "non-fractured",
        "nonfractured",
        "not_fractured",
        "no_fracture",
        "negative",
        "neg",
        "no",
        "0",
    }
)
CLASS_NAMES = ("normal", "fracture")
FRACATLAS_CSV = "dataset.csv"
#: FracAtlas's body-part columns (0/1 each; its "mixed" column flags several parts).
FRACATLAS_BODY_PARTS = ("hand", "leg", "hip", "shoulder")
SPLIT_NAMES = ("train", "val", "test")
SPLIT_FORMAT = 1


class DataError(ValueError):
    """The data folder or split file cannot be used; the message says why."""


@dataclass(frozen=True)
class Sample:
    #: Path relative to the data root, with forward slashes.
    path: str
    #: 1 = fracture, 0 = normal (index into CLASS_NAMES).
    label: int
    #: Group (patient) key; "" means the image is its own group.
    group: str = ""
    #: Body parts shown (FracAtlas's columns); empty when the data does not say.
    body_parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelledImages:
    root: Path
    layout: str
    samples: tuple[Sample, ...]

    def describe(self) -> str:
        """One line for logs and the model card: layout, folder name and counts, no paths."""
        positives = sum(s.label for s in self.samples)
        return (
            f"{self.layout} layout '{self.root.name}': {len(self.samples)} images, "
            f"{positives} fracture / {len(self.samples) - positives} normal"
        )


def _hash_group(value: str) -> str:
    # Group keys may be patient IDs: keep only a digest in memory and files.
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:16] if value else ""


def _is_image_file(path: Path) -> bool:
    """Image suffix, or no suffix and a DICOM preamble (files exported from a PACS)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix or not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(132)[128:] == b"DICM"


def _patient_group(path: Path) -> str:
    if path.suffix.lower() not in DICOM_SUFFIXES:
        return ""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except (InvalidDicomError, OSError) as exc:
        raise DataError(f"cannot read DICOM header of {path.name}: {exc}") from exc
    return _hash_group(str(ds.get("PatientID", "") or ""))


def _with_patient_list(root: Path, samples: list[Sample], group_by: str) -> list[Sample]:
    """`samples` grouped by the patient list file `group_by` (see `training.patients`)."""
    path = patient_csv_path(root, group_by)
    try:
        key, mapping = read_patient_csv(path)
        patients = patients_of(
            [s.path for s in samples], key=key, mapping=mapping, source=path.name
        )
    except PatientListError as exc:
        raise DataError(str(exc)) from exc
    return [replace(s, group=_hash_group(p)) for s, p in zip(samples, patients, strict=True)]


def _body_parts(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(
        part for part in FRACATLAS_BODY_PARTS if (row.get(part) or "").strip() in ("1", "1.0")
    )


def _fracatlas_folders(root: Path) -> dict[int, str]:
    """Names of the two image folders ("Fractured", "Non_fractured"; "-" or case may vary)."""
    found: dict[int, str] = {}
    images = root / "images"
    if images.is_dir():
        for folder in images.iterdir():
            name = folder.name.lower().replace("-", "_")
            if folder.is_dir() and name in ("fractured", "non_fractured"):
                found[int(name == "fractured")] = folder.name
    if len(found) != 2:
        raise DataError(f"{root} needs images/Fractured and images/Non_fractured (FracAtlas)")
    return found


def read_fracatlas(root: str | Path, *, group_by: str = "") -> LabelledImages:
    """Read the FracAtlas layout. `group_by`: "", "patient-id", a dataset.csv column or a
    patient list file (see the module docstring)."""
    root = Path(root)
    csv_path = root / FRACATLAS_CSV
    if group_by == "subfolder":
        raise DataError("group_by 'subfolder' applies to the folder layout, not FracAtlas")
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise DataError(f"cannot read {csv_path}: {exc}") from exc
    columns = set(rows[0]) if rows else set()
    for needed in (
        "image_id",
        "fractured",
        *(
            [group_by]
            if group_by not in ("", "patient-id") and not is_patient_csv(group_by)
            else []
        ),
    ):
        if needed not in columns:
            raise DataError(f"{FRACATLAS_CSV} has no '{needed}' column")
    folders = _fracatlas_folders(root)
    samples, missing = [], []
    for row in rows:
        value = row["fractured"].strip().lower()
        if value not in ("0", "1", "true", "false"):
            raise DataError(f"{FRACATLAS_CSV}: fractured must be 0/1, got {value!r}")
        label = int(value in ("1", "true"))
        rel = f"images/{folders[label]}/{row['image_id'].strip()}"
        if not (root / rel).is_file():
            missing.append(rel)
            continue
        if group_by == "patient-id":
            group = _patient_group(root / rel)
        elif group_by and not is_patient_csv(group_by):
            group = _hash_group(row[group_by].strip())
        else:
            group = ""
        samples.append(Sample(rel, label, group, _body_parts(row)))
    if missing:
        raise DataError(
            f"{len(missing)} images listed in {FRACATLAS_CSV} are missing, e.g. {missing[0]}"
        )
    if not samples:
        raise DataError(f"{csv_path} lists no images")
    if is_patient_csv(group_by):
        samples = _with_patient_list(root, samples, group_by)
    return LabelledImages(root, "fracatlas", tuple(samples))


def class_label(folder: str, positive_class: str = "") -> int | None:
    """Label of a class folder name, or None if the name is not recognised."""
    if positive_class:
        return int(folder == positive_class)
    name = folder.strip().lower().replace(" ", "_")
    if name in POSITIVE_NAMES:
        return 1
    if name in NEGATIVE_NAMES:
        return 0
    return None


def read_folders(
    root: str | Path, *, positive_class: str = "", group_by: str = ""
) -> LabelledImages:
    """Read `ROOT/<class>/**/<image>`. `group_by`: "", "subfolder", "patient-id" or a patient
    list file (see the module docstring)."""
    root = Path(root)
    if group_by not in ("", "subfolder", "patient-id") and not is_patient_csv(group_by):
        raise DataError(
            "group_by for the folder layout must be '', 'subfolder', 'patient-id' or a patient "
            "list file (*.csv)"
        )
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if positive_class and positive_class not in {p.name for p in folders}:
        raise DataError(f"positive class folder '{positive_class}' not found in {root}")
    unknown = [p.name for p in folders if class_label(p.name, positive_class) is None]
    if unknown:
        raise DataError(
            f"class folder(s) {', '.join(unknown)} are neither fracture nor normal names; "
            "rename them or pass --positive-class"
        )
    samples = []
    for folder in folders:
        label = class_label(folder.name, positive_class)
        assert label is not None
        for path in sorted(folder.rglob("*")):
            if not path.is_file() or not _is_image_file(path):
                continue
            rel = path.relative_to(root)
            if group_by == "subfolder":
                group = _hash_group(rel.parts[1] if len(rel.parts) > 2 else "")
            elif group_by == "patient-id":
                group = _patient_group(path)
            else:
                group = ""
            samples.append(Sample(rel.as_posix(), label, group))
    if len({s.label for s in samples}) < 2:
        raise DataError(f"{root} needs images of both classes (fracture and normal)")
    if is_patient_csv(group_by):
        samples = _with_patient_list(root, samples, group_by)
    return LabelledImages(root, "folders", tuple(samples))


def read_dataset(
    root: str | Path, *, positive_class: str = "", group_by: str = ""
) -> LabelledImages:
    """Read either layout: FracAtlas when `ROOT/dataset.csv` exists, class folders otherwise."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    if (root / FRACATLAS_CSV).is_file():
        return read_fracatlas(root, group_by=group_by)
    return read_folders(root, positive_class=positive_class, group_by=group_by)


@dataclass(frozen=True)
class Split:
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    group_by: str

    def names(self, split: str) -> tuple[str, ...]:
        if split not in SPLIT_NAMES:
            raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLIT_NAMES)}")
        return tuple(getattr(self, split))


def make_split(
    images: LabelledImages, *, val_fraction: float, test_fraction: float, seed: int, group_by: str
) -> Split:
    """Stratified, group-aware split with a fixed seed.

    Groups (patients; each image is its own group when there are none) are labelled fracture
    if any of their images is; within each label the groups are shuffled and handed to test,
    then val, until each holds its fraction of that label's images; the rest train.
    """
    groups: dict[str, list[Sample]] = defaultdict(list)
    for i, sample in enumerate(images.samples):
        groups[sample.group or f"#image{i}"].append(sample)
    rng = np.random.default_rng(seed)
    assigned: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for label in (0, 1):
        keys = sorted(k for k, members in groups.items() if max(m.label for m in members) == label)
        keys = [keys[i] for i in rng.permutation(len(keys))]
        total = sum(len(groups[k]) for k in keys)
        targets = {"test": test_fraction * total, "val": val_fraction * total}
        if len(keys) >= 3:  # at least one group of each label in val (and test, if wanted)
            targets = {k: max(v, 1.0) if v > 0 else 0.0 for k, v in targets.items()}
        counts = dict.fromkeys(targets, 0)
        for key in keys:
            members = groups[key]
            target_split = next(
                (s for s in ("test", "val") if counts[s] + len(members) / 2 <= targets[s]),
                "train",
            )
            if target_split != "train":
                counts[target_split] += len(members)
            assigned[target_split].extend(m.path for m in members)
    return Split(
        train=tuple(sorted(assigned["train"])),
        val=tuple(sorted(assigned["val"])),
        test=tuple(sorted(assigned["test"])),
        seed=seed,
        group_by=group_by,
    )


def save_split(split: Split, path: str | Path, images: LabelledImages) -> None:
    labels = {s.path: s.label for s in images.samples}
    data: dict[str, Any] = {
        "format": SPLIT_FORMAT,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "data": images.describe(),
        "seed": split.seed,
        "group_by": split.group_by,
        "note": (
            "image-level split: no patient ids, images of one patient may be in several splits"
            if not split.group_by
            else f"group-aware split by {split.group_by}: no group straddles two splits"
        ),
        "counts": {
            name: {
                "images": len(split.names(name)),
                "fracture": sum(labels[p] for p in split.names(name)),
            }
            for name in SPLIT_NAMES
        },
    }
    data.update({name: list(split.names(name)) for name in SPLIT_NAMES})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
    tmp.replace(path)


def load_split(path: str | Path) -> tuple[Split, dict[str, Any]]:
    """Read a split file; also return its raw JSON (counts, note) for checks and reports."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from exc
    if data.get("format") != SPLIT_FORMAT or not all(n in data for n in SPLIT_NAMES):
        raise DataError(f"{path} is not a split file of format {SPLIT_FORMAT}")
    split = Split(
        train=tuple(data["train"]),
        val=tuple(data["val"]),
        test=tuple(data["test"]),
        seed=int(data.get("seed", 0)),
        group_by=str(data.get("group_by", "")),
    )
    return split, data


def select(images: LabelledImages, split: Split, name: str) -> list[Sample]:
    """The samples of one split, checked against the data on disk."""
    by_path = {s.path: s for s in images.samples}
    wanted = split.names(name)
    missing = [p for p in wanted if p not in by_path]
    if missing:
        raise DataError(
            f"{len(missing)} images of the '{name}' split are not in the data set "
            f"(e.g. {missing[0]}): wrong data folder, or the split file belongs to other data"
        )
    return [by_path[p] for p in wanted]


def check_split(images: LabelledImages, split: Split, raw: dict[str, Any]) -> list[str]:
    """Raise if labels changed since the split was made; return notes (e.g. unused images)."""
    notes = []
    for name in SPLIT_NAMES:
        chosen = select(images, split, name)
        expected = raw.get("counts", {}).get(name, {}).get("fracture")
        if expected is not None and expected != sum(s.label for s in chosen):
            raise DataError(f"labels of the '{name}' split changed since the split file was made")
    used = {p for n in SPLIT_NAMES for p in split.names(n)}
    unused = sum(1 for s in images.samples if s.path not in used)
    if unused:
        notes.append(f"{unused} images are not in the split file and are not used")
    return notes


def load_or_make_split(
    images: LabelledImages,
    path: str | Path,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    group_by: str,
) -> tuple[Split, list[str]]:
    """Reuse the split file at `path` if it exists, otherwise make one and write it there."""
    path = Path(path)
    if path.is_file():
        split, raw = load_split(path)
        notes = check_split(images, split, raw)
        return split, [f"reusing split file {path}", *notes]
    split = make_split(
        images, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, group_by=group_by
    )
    try:
        save_split(split, path, images)
    except OSError as exc:
        raise DataError(f"cannot write split file {path} ({exc}); use --split-file") from exc
    counts = Counter({n: len(split.names(n)) for n in SPLIT_NAMES})
    return split, [
        f"wrote split file {path}: train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']} (seed {seed})"
    ]


def load_grayscale(path: Path) -> np.ndarray:
    """`preprocess.load_image`, with the file name added to the error."""
    try:
        return preprocess.load_image(path)
    except preprocess.NotClassifiable as exc:
        raise DataError(f"{path.name}: {exc.reason}") from exc


class RadiographDataset(torch.utils.data.Dataset[tuple[torch.Tensor, int]]):
    """Images → (network input, label), through the node's own preprocessing.

    With `augment`, each item is augmented with a generator seeded from (seed, epoch, index),
    so an epoch is reproducible whatever the number of workers and across a resume.
    """

    def __init__(
        self,
        root: Path,
        samples: Sequence[Sample],
        *,
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.root = root
        self.samples = list(samples)
        self.input_size = input_size
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> list[int]:
        return [s.label for s in self.samples]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        image = load_grayscale(self.root / sample.path)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image = augment_image(image, rng, self.augment)
        array = preprocess.to_model_input(
            image, input_size=self.input_size, mean=self.mean, std=self.std
        )
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), sample.label
