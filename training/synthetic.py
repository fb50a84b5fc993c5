"""A small, learnable, radiograph-like data set: for tests and as a smoke test for users.

Each image is a portrait "radiograph": dark background, a soft-tissue band and, inside it, a
bright bone with brighter cortical edges, plus noise. A "fracture" is a thin line crossing the
bone, mostly dark (a fracture gap), sometimes bright (an impacted fracture). Nothing here is
real anatomy; it only lets the whole train → evaluate → export → serve path run anywhere.

Written in the folder layout (`OUT/fracture`, `OUT/normal`) or the FracAtlas layout
(`OUT/dataset.csv` with FracAtlas's columns, `OUT/images/Fractured`, `OUT/images/Non_fractured`,
and the fracture boxes in `OUT/Annotations/COCO JSON/COCO_fracture_masks.json`, as FracAtlas
ships them). Every fourth image is a DICOM CR file (12-bit, windowed; half of them
MONOCHROME1), the rest PNG/JPEG. Each run of eight images belongs to one synthetic patient:
its DICOM files carry the PatientID (`group_by = "patient-id"`) and `OUT/patients.csv` lists
the patient of every image (`group_by = "patients.csv"`), so patient-level splits can be
tried. FracAtlas-layout images show a hand, leg or hip in turn (never a shoulder). The DICOM
files are valid CR objects the node accepts, e.g. for `dicomnode classify` or for sending to
a running node.

    python -m training.synthetic --out /tmp/synthetic [--n 96] [--size 96] [--layout both]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    UID,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

LAYOUTS = ("folders", "fracatlas", "both")
#: The columns of FracAtlas's dataset.csv (only image_id and fractured are used for training).
FRACATLAS_COLUMNS = (
    "image_id",
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "fractured",
    "fracture_count",
    "frontal",
    "lateral",
    "oblique",
)
_DICOM_MAX = 4095  # 12-bit stored values
#: Consecutive images of one synthetic patient.
IMAGES_PER_PATIENT = 8
#: Body part of image i in the FracAtlas layout: BODY_PARTS[i % 3] (no shoulder on purpose).
BODY_PARTS = ("hand", "leg", "hip")
PATIENTS_CSV = "patients.csv"
COCO_JSON = "Annotations/COCO JSON/COCO_fracture_masks.json"


@dataclass(frozen=True)
class SyntheticImage:
    #: Path relative to the layout's root, with forward slashes.
    path: str
    label: int
    photometric: str  # "" for PNG/JPEG
    patient: str = ""
    #: FracAtlas layout only: "hand", "leg" or "hip".
    body_part: str = ""
    #: The fracture's box (x, y, width, height) in pixels; None for a normal image.
    box: tuple[float, float, float, float] | None = None


def _smooth_step(x: np.ndarray) -> np.ndarray:
    return np.clip(x + 0.5, 0.0, 1.0)


def make_image(rng: np.random.Generator, *, size: int, fracture: bool) -> np.ndarray:
    """A float32 (1.2·size)×size image in [0, 1]; with `fracture`, a line crosses the bone."""
    return make_image_and_box(rng, size=size, fracture=fracture)[0]


def make_image_and_box(
    rng: np.random.Generator, *, size: int, fracture: bool
) -> tuple[np.ndarray, tuple[float, float, float, float] | None]:
    """`make_image` and the fracture's bounding box, COCO-style (x, y, width, height) in
    pixels, or None without a fracture."""
    box = None
    height, width = round(size * 1.2), size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = math.radians(rng.uniform(-30, 30))  # bone axis, from vertical
    axis = np.array([math.sin(angle), math.cos(angle)], dtype=np.float32)  # (x, y)
    normal = np.array([axis[1], -axis[0]], dtype=np.float32)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    cy = height / 2 + rng.uniform(-0.1, 0.1) * height
    (xx - cx) * axis[0] + (yy - cy) * axis[1]  # along the bone
    v = (xx - cx) * normal[0] + (yy - cy) * normal[1]  # across the bone
    half = rng.uniform(0.08, 0.12) * size  # half width of the bone
    image = 0.06 + 0.04 * (yy / height) + 0.02 * rng.standard_normal() * (xx / width)
    tissue = _smooth_step(2.6 * half - np.abs(v))
    image = image + tissue * rng.uniform(0.18, 0.26)
    inside = _smooth_step(half - np.abs(v))
    depth = np.clip(np.abs(v) / half, 0.0, 1.0)
    bone = rng.uniform(0.62, 0.72) + 0.2 * depth**4  # cortex brighter than the medulla
    image = image * (1 - inside) + bone * inside
    if fracture:
        tilt = angle + math.pi / 2 + math.radians(rng.uniform(-35, 35))
        direction = np.array([math.sin(tilt), math.cos(tilt)], dtype=np.float32)
        line_normal = np.array([direction[1], -direction[0]], dtype=np.float32)
        at = rng.uniform(-0.2, 0.2) * height
        px, py = cx + at * axis[0], cy + at * axis[1]
        distance = np.abs((xx - px) * line_normal[0] + (yy - py) * line_normal[1])
        thickness = max(2.0, size / 24)
        line = _smooth_step(thickness / 2 - distance) * inside
        value = 0.15 if rng.random() < 0.7 else 1.0  # gap, or impacted (bright)
        image = image * (1 - line) + value * line
        rows, cols = np.nonzero(line > 0.1)  # every visibly changed pixel
        box = (
            float(cols.min()),
            float(rows.min()),
            float(cols.max() - cols.min() + 1),
            float(rows.max() - rows.min() + 1),
        )
    image = image + rng.normal(0.0, 0.025, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32), box


def _uid(seed: int, *parts: object) -> UID:
    return UID(
        generate_uid(
            PYDICOM_ROOT_UID,
            entropy_srcs=["dicomnode-synthetic", str(seed)] + [str(p) for p in parts],
        )
    )


def make_dicom(
    image: np.ndarray,
    *,
    seed: int,
    index: int,
    photometric: str = "MONOCHROME2",
    body_part: str = "HAND",
) -> Dataset:
    """A CR dataset (12-bit, with a window mapping stored values 0..4095 onto [0, 1])."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2")
    stored = np.rint(image * _DICOM_MAX).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (_DICOM_MAX - stored).astype(np.uint16)
    patient = index // IMAGES_PER_PATIENT  # DICOM files are 3, 7 | 11, 15 | …: two per patient
    sop_instance_uid = _uid(seed, "image", index)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SOPClassUID = ComputedRadiographyImageStorage
    ds.SOPInstanceUID = sop_instance_uid
    day = dt.date(2024, 1, 1) + dt.timedelta(days=patient)
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = day.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"SYN{seed % 1000:03d}{patient:05d}"
    ds.Modality = "CR"
    ds.Manufacturer = "Synthetic phantom generator"
    ds.InstitutionName = "Synthetic"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic radiograph (not a patient)"
    ds.SeriesDescription = "Synthetic CR"
    ds.PatientName = "SYNTHETIC^PHANTOM"
    ds.PatientID = patient_id(seed=seed, index=index)
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = body_part
    ds.ViewPosition = "PA"
    ds.StudyInstanceUID = _uid(seed, "study", patient)
    ds.SeriesInstanceUID = _uid(seed, "series", patient)
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = (index % IMAGES_PER_PATIENT) // 4 + 1
    ds.PatientOrientation = ["L", "F"]
    ds.Laterality = "L"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = stored.tobytes()
    return ds


def patient_id(*, seed: int, index: int) -> str:
    """The synthetic patient of image `index` (runs of IMAGES_PER_PATIENT images)."""
    return f"SYN-{seed}-{index // IMAGES_PER_PATIENT:04d}"


def _kind(index: int) -> tuple[str, str]:
    """(suffix, photometric) of image `index`: every 4th DICOM (alternating), else PNG/JPEG."""
    if index % 4 == 3:
        return ".dcm", "MONOCHROME1" if index % 8 == 7 else "MONOCHROME2"
    return (".jpg" if index % 4 == 1 else ".png"), ""


def _write(
    path: Path, image: np.ndarray, *, seed: int, index: int, photometric: str, body_part: str
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".dcm":
        ds = make_dicom(
            image, seed=seed, index=index, photometric=photometric, body_part=body_part.upper()
        )
        ds.save_as(path, enforce_file_format=True)
        return
    pixels = Image.fromarray(np.rint(image * 255).astype(np.uint8))
    if path.suffix == ".jpg":
        pixels.save(path, format="JPEG", quality=95)
    else:
        pixels.save(path, format="PNG")


def _labels(n: int, *, fracture_fraction: float, seed: int) -> list[int]:
    positives = round(n * fracture_fraction)
    if not 2 <= positives <= n - 2:
        raise ValueError("need at least two images of each class")
    labels = np.array([1] * positives + [0] * (n - positives))
    return [int(v) for v in np.random.default_rng([seed, 7]).permutation(labels)]


def _coco(images: list[SyntheticImage], *, height: int, width: int) -> dict[str, Any]:
    """FracAtlas's COCO file: the fractured images and one box (and polygon) per fracture."""
    entries: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image in images:
        if image.box is None:
            continue
        image_id = len(entries) + 1
        entries.append(
            {"id": image_id, "file_name": Path(image.path).name, "height": height, "width": width}
        )
        x, y, w, h = image.box
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "bbox": [x, y, w, h],
                "area": w * h,
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                "iscrowd": 0,
            }
        )
    return {
        "images": entries,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "fractured"}],
    }


def write_dataset(
    out: str | Path,
    *,
    layout: str = "folders",
    n: int = 96,
    size: int = 96,
    fracture_fraction: float = 0.4,
    seed: int = 0,
) -> list[SyntheticImage]:
    """Write `n` images in `layout` ("folders" or "fracatlas") under `out`; return them."""
    if layout not in ("folders", "fracatlas"):
        raise ValueError("layout must be 'folders' or 'fracatlas'")
    if size < 32:
        raise ValueError("size must be at least 32")
    out = Path(out)
    written = []
    rows = []
    for index, label in enumerate(_labels(n, fracture_fraction=fracture_fraction, seed=seed)):
        image, box = make_image_and_box(
            np.random.default_rng([seed, index]), size=size, fracture=bool(label)
        )
        suffix, photometric = _kind(index)
        body_part = ""
        if layout == "folders":
            rel = f"{'fracture' if label else 'normal'}/syn{index:04d}{suffix}"
        else:
            suffix = ".dcm" if suffix == ".dcm" else ".jpg"
            image_id = f"IMG{index:07d}{suffix}"
            rel = f"images/{'Fractured' if label else 'Non_fractured'}/{image_id}"
            body_part = BODY_PARTS[index % len(BODY_PARTS)]
            row: dict[str, str | int] = dict.fromkeys(FRACATLAS_COLUMNS, 0)
            row.update(
                image_id=image_id,
                fractured=label,
                fracture_count=label,
                frontal=1,
                **{body_part: 1},
            )
            rows.append(row)
        _write(
            out / rel,
            image,
            seed=seed,
            index=index,
            photometric=photometric,
            body_part=body_part or "hand",
        )
        patient = patient_id(seed=seed, index=index)
        written.append(SyntheticImage(rel, label, photometric, patient, body_part, box))
    with (out / PATIENTS_CSV).open("w", newline="", encoding="utf-8") as fh:
        key = "path" if layout == "folders" else "image_id"
        writer = csv.writer(fh)
        writer.writerow([key, "patient_id"])
        for item in written:
            writer.writerow(
                [item.path if layout == "folders" else Path(item.path).name, item.patient]
            )
    if layout == "fracatlas":
        with (out / "dataset.csv").open("w", newline="", encoding="utf-8") as fh:
            dict_writer = csv.DictWriter(fh, fieldnames=FRACATLAS_COLUMNS)
            dict_writer.writeheader()
            dict_writer.writerows(rows)
        coco = out / COCO_JSON
        coco.parent.mkdir(parents=True, exist_ok=True)
        height = round(size * 1.2)
        coco.write_text(json.dumps(_coco(written, height=height, width=size)) + "\n", "utf-8")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="folder to write (created)")
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="both",
        help="'both' writes OUT/folders and OUT/fracatlas",
    )
    parser.add_argument("--n", type=int, default=96, help="number of images (default 96)")
    parser.add_argument("--size", type=int, default=96, help="image width in pixels")
    parser.add_argument("--fracture-fraction", type=float, default=0.4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    layouts = ("folders", "fracatlas") if args.layout == "both" else (args.layout,)
    for layout in layouts:
        target = out / layout if args.layout == "both" else out
        images = write_dataset(
            target,
            layout=layout,
            n=args.n,
            size=args.size,
            fracture_fraction=args.fracture_fraction,
            seed=args.seed,
        )
        dicoms = sum(1 for i in images if i.photometric)
        positives = sum(i.label for i in images)
        print(f"{target}: {len(images)} images ({positives} fracture, {dicoms} DICOM), {layout}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
