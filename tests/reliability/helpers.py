"""Shared pieces of the reliability suite: small real radiographs, node state read from its
database, process figures (RSS, open fds) and a tmpfs the test mounts.

Everything reads the node from the outside (its SQLite file, its spool directory, /proc),
as an operator would; nothing here imports the node's internals except the UID derivation
the tests check results against.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.support.data import RG3_UNCR, copy_with_new_uids, new_uid, testdata

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.33"}
DEMO_MODEL_VERSION = "demo-test_efficientnet-seed0"


def small_cr(dst: Path, *, size: int = 256) -> Path:
    """A real CR (RG3_UNCR, MONOCHROME1 10-bit) cropped to `size`², uncompressed.

    The same radiograph, smaller: hundreds of copies stay cheap on disk and in the worker.
    """
    ds = pydicom.dcmread(testdata(RG3_UNCR))
    pixels = ds.pixel_array
    top = (pixels.shape[0] - size) // 2
    left = (pixels.shape[1] - size) // 2
    crop = pixels[top : top + size, left : left + size].copy()
    ds.PixelData = crop.tobytes()
    ds.Rows, ds.Columns = crop.shape
    ds.SOPInstanceUID = new_uid("small_cr", dst.resolve())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return dst


def make_copies(
    base: Path, directory: Path, count: int, *, study_uid: str, prefix: str = "img"
) -> list[Path]:
    """`count` distinct instances of `base` in one study (new SOP Instance UIDs)."""
    series = new_uid("series", directory.resolve(), study_uid)
    return [
        copy_with_new_uids(base, directory / f"{prefix}{i:04d}.dcm", study_uid=study_uid,
                           series_uid=series, InstanceNumber=i + 1)
        for i in range(count)
    ]  # fmt: skip


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# ------------------------------------------------------------------- node state from outside


def db_rows(data_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows from the node's SQLite database (read-only; safe while the node runs)."""
    uri = f"file:{data_dir / 'dicomnode.db'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
        return list(db.execute(sql, args))


def spool_files(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "spool").rglob("*") if p.is_file())


def expected_sc_uid(source_sop_uid: str, *, uid_root: str) -> str:
    """The SC UID the node must derive for a source image (DESIGN: idempotent outputs)."""
    from dicomnode.uids import derive_uid

    return derive_uid(uid_root, source_sop_uid, DEMO_MODEL_VERSION, "sc")


# ------------------------------------------------------------------------- process figures


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def figures(title: str, **values: Any) -> None:
    """Print the figures a reliability test measured (shown with -s / make reliability)."""
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    print(f"\n[reliability] {title}: {shown}", flush=True)


# ----------------------------------------------------------------------------------- tmpfs


@contextlib.contextmanager
def tmpfs(directory: Path, *, size_mb: int) -> Iterator[Path]:
    """Mount a `size_mb` tmpfs on `directory` (needs root); unmounted on exit."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(directory)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (root needed): {done.stderr.strip()}", pytrace=False)
    try:
        yield directory
    finally:
        for _ in range(20):
            if subprocess.run(["umount", str(directory)], capture_output=True).returncode == 0:
                break
            subprocess.run(["umount", "-l", str(directory)], capture_output=True)
