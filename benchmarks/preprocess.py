"""Preprocessing per transfer syntax: read + decode + window + model input, full and reduced.

    PYTHONPATH=. .venv/bin/python benchmarks/preprocess.py [--rounds 5] [--package DIR]

Variants of pydicom-data's RG3 (CR hand, 1760², 10 bit) and RG1 (CR chest, 1955×1841, 15 bit):
uncompressed, JPEG 2000 lossless and lossy (as shipped), and made here from the uncompressed
file: JPEG-LS lossless (dcmtk dcmcjpls), JPEG lossless SV1 (dcmcjpeg), RLE (dcmcrle), deflated
(pydicom). For each: ms to read + `to_grayscale` (the decode dominates) + `to_model_input`,
with the node's reduced decoding (model.decode_min_size = 768) and without. Accuracy of the
reduced decode: mean and max |Δ| of the model input (display units, [0, 1]) and |Δp| with the
model (the untrained demo unless --package: a trained package is the meaningful check).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, median, table, write_json
from dicomnode.imaging.preprocess import to_grayscale, to_model_input
from dicomnode.model.classifier import Classifier
from tests.support import data

DCMTK = {
    "JPEG-LS lossless": ["dcmcjpls", "+el"],
    "JPEG lossless SV1": ["dcmcjpeg", "+e1"],
    "RLE lossless": ["dcmcrle"],
}


def variants(workdir: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for stem, base in (("RG3", data.RG3_UNCR), ("RG1", data.RG1_UNCR)):
        source = data.testdata(base)
        out[f"{stem} uncompressed"] = source
        out[f"{stem} J2K lossless"] = data.testdata(base.replace("UNCR", "J2KR"))
        out[f"{stem} J2K lossy"] = data.testdata(base.replace("UNCR", "J2KI"))
        for name, cmd in DCMTK.items():
            target = workdir / f"{stem}-{name.replace(' ', '_')}.dcm"
            done = subprocess.run([*cmd, str(source), str(target)], capture_output=True)
            if done.returncode == 0:
                out[f"{stem} {name}"] = target
            else:
                print(f"{stem} {name}: {done.stderr.decode()[-300:]}", file=sys.stderr)
        ds = pydicom.dcmread(source)
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        deflated = workdir / f"{stem}-deflated.dcm"
        ds.save_as(deflated, enforce_file_format=True)
        out[f"{stem} deflated"] = deflated
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--package", default="")
    parser.add_argument("--min-size", type=int, default=768)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    before = machine()
    classifier = (
        Classifier.from_package(args.package, device="cpu", runtime="onnxruntime")
        if args.package
        else Classifier.demo(device="cpu", runtime="onnxruntime")
    )
    card = classifier.card
    min_size = max(args.min_size, card.input_size)

    def run(path: Path, reduced: bool) -> np.ndarray:
        ds = pydicom.dcmread(path)
        image = to_grayscale(ds, min_size=min_size if reduced else 0)
        to_model_input(image, input_size=card.input_size, mean=card.mean, std=card.std)
        return image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = variants(Path(tmp))
        timings: dict[tuple[str, bool], list[float]] = {}
        for name, path in files.items():  # warm-up, and the accuracy of the reduced decode
            full, reduced = run(path, False), run(path, True)
            a, b = (to_model_input(i, input_size=card.input_size, mean=(0, 0, 0), std=(1, 1, 1))
                    for i in (full, reduced))  # fmt: skip
            dp = abs(classifier.predict(full).probability - classifier.predict(reduced).probability)
            rows.append({"file": name, "transfer syntax": pydicom.dcmread(
                path, stop_before_pixels=True).file_meta.TransferSyntaxUID.name,
                "MB": path.stat().st_size / 1e6, "decoded": "x".join(map(str, reduced.shape)),
                "input mean |Δ|": float(np.abs(a - b).mean()),
                "input max |Δ|": float(np.abs(a - b).max()), "|Δp|": f"{dp:.1e}"})  # fmt: skip
        for _ in range(args.rounds):
            for name, path in files.items():
                for reduced in (False, True):
                    started = time.perf_counter()
                    run(path, reduced)
                    ms = (time.perf_counter() - started) * 1000
                    timings.setdefault((name, reduced), []).append(ms)
    for row in rows:
        full_ms = median(timings[(row["file"], False)])
        reduced_ms = median(timings[(row["file"], True)])
        row.update({"full ms": full_ms, "node ms": reduced_ms, "speed-up": full_ms / reduced_ms})
    after = machine()
    print(f"model {card.display_name}, input {card.input_size}², decode_min_size {min_size}; "
          f"load before/after {before['load_average']} / {after['load_average']}")  # fmt: skip
    print(table(rows, ["file", "transfer syntax", "MB", "full ms", "node ms", "speed-up",
                       "decoded", "input mean |Δ|", "input max |Δ|", "|Δp|"]))  # fmt: skip
    write_json("preprocess", {"machine_before": before, "machine_after": after,
                              "min_size": min_size, "rows": rows}, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
