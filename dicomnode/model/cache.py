"""The model cache (`data_dir/models`): marking the files a load used, and removing the files
no load has used for `retention.model_cache_days`.

The cache holds only what `dicomnode.model.prepare` and `dicomnode.model.torchnet` write:
- manifests `demo-<arch>-seed<n>-torch<v>-timm<v>.json` and
  `package-<arch>-<key>-torch<v>-timm<v>.json`, each naming a graph and a reference;
- graphs `<arch>-<key>.onnx` (~75 MB for EfficientNet-B4; `key`: 32 hex digits from
  `runtime.export_key`, which includes the torch version) and PyTorch's outputs for the
  load-time check `<arch>-<key>.reference.npz`; with `runtime = "auto"` on a package with
  validation images, the int8 graph `<arch>-int8-<key>.onnx` (`select.quantize_int8`);
- temporary files `.prepare-*.part` and `.export-*.part`, left only by a killed preparation.

"Used" is a file's modification time: each load touches the files it used (`mark_used`). A
file is removed when it has one of those names, is a regular file (a symlink is never followed
nor removed), has not been used for `days`, is not a file of the model this node serves, and
no manifest that stays names it: after a timm upgrade the new manifest names the same graph
as the old one (a torch upgrade exports a new graph). A manifest goes before the files it
names, so a reader never finds a manifest whose graph is gone. Anything else in the
directory is left alone.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import structlog

log = structlog.stdlib.get_logger("dicomnode.model_cache")

Kind = Literal["manifest", "graph", "reference", "partial"]

_PATTERNS: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    ("manifest", re.compile(r"(demo|package)-[^/]+-torch[^/]+-timm[^/]+\.json")),
    ("reference", re.compile(r"[^./][^/]*-[0-9a-f]{32}\.reference\.npz")),
    ("graph", re.compile(r"[^./][^/]*-[0-9a-f]{32}\.onnx")),
    ("partial", re.compile(r"\.(prepare|export)-[^/]+\.part")),
)


def kind_of(name: str) -> Kind | None:
    """Which of our cache files `name` is, or None for anything else."""
    for kind, pattern in _PATTERNS:
        if pattern.fullmatch(name):
            return kind
    return None


@dataclass(frozen=True)
class CacheFile:
    name: str
    kind: Kind
    size: int
    used_at: datetime  # modification time
    names: tuple[str, ...] = ()  # for a manifest: the files it names


@dataclass
class CacheCleanup:
    removed: list[CacheFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.removed)


def mark_used(paths: Iterable[Path]) -> None:
    """Set each file's modification time to now. Never raises: a read-only or vanished cache
    file must not fail a load (it is then only not marked)."""
    for path in paths:
        try:
            os.utime(path, follow_symlinks=False)
        except OSError as exc:
            log.info("model cache: cannot mark a file used", file=Path(path).name,
                     error=type(exc).__name__)  # fmt: skip


# --- the pure selection -----------------------------------------------------------------------


def select_unused(
    files: Iterable[CacheFile], *, now: datetime, days: float, keep: frozenset[str]
) -> list[CacheFile]:
    """The files to remove at `now` (manifests first); `keep` are names never removed."""
    if days <= 0:
        return []
    files = list(files)
    cutoff = now - timedelta(days=days)

    def unused(f: CacheFile) -> bool:
        return f.used_at <= cutoff and f.name not in keep

    staying = [f for f in files if f.kind == "manifest" and not unused(f)]
    named = {name for manifest in staying for name in manifest.names}
    out = [f for f in files if unused(f) and f.name not in named]
    return sorted(out, key=lambda f: (f.kind != "manifest", f.name))


# --- the directory ----------------------------------------------------------------------------


def _named(path: Path) -> tuple[str, ...]:
    """The plain file names a manifest names (nothing when it cannot be read)."""
    try:
        manifest = json.loads(path.read_text("utf-8"))
        values = [manifest.get("onnx"), manifest.get("reference"), manifest.get("int8")]
    except (OSError, ValueError, AttributeError):
        return ()
    return tuple(v for v in values if isinstance(v, str) and v and v == Path(v).name)


def _used_at(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def scan(cache_dir: Path) -> list[CacheFile]:
    """Our files in `cache_dir` (regular files only). Raises OSError for an unreadable dir."""
    files = []
    with os.scandir(cache_dir) as entries:
        for entry in entries:
            kind = kind_of(entry.name)
            if kind is None:
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            names = _named(Path(entry.path)) if kind == "manifest" else ()
            files.append(CacheFile(entry.name, kind, st.st_size, _used_at(st), names))
    return files


def clean_model_cache(
    cache_dir: Path, *, days: float, keep: Iterable[Path], now: datetime
) -> CacheCleanup:
    """Remove the cache files not used for `days` (0: none), never those in `keep` (the model
    this node serves). Never raises: a missing or unreadable cache is logged and left."""
    report = CacheCleanup()
    if days <= 0:
        return report
    cache_dir = Path(cache_dir)
    try:
        files = scan(cache_dir)
    except FileNotFoundError:
        return report  # nothing prepared yet
    except OSError as exc:
        report.errors.append(f"cannot list the model cache ({type(exc).__name__})")
        log.warning("model cache: cannot list it", error=type(exc).__name__)
        return report
    for f in select_unused(files, now=now, days=days, keep=frozenset(p.name for p in keep)):
        path = cache_dir / f.name
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or _used_at(st) > f.used_at:
                continue  # replaced or used since the scan
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            report.errors.append(f"{f.name}: {type(exc).__name__}")
            log.warning("model cache: cannot remove an unused file", file=f.name,
                        error=type(exc).__name__)  # fmt: skip
            continue
        report.removed.append(f)
        log.info("model cache: removed a file unused for model_cache_days", file=f.name,
                 bytes=f.size, last_used=f.used_at.date().isoformat(), days=days)  # fmt: skip
    if report.removed or report.errors:
        log.info("model cache clean-up finished", files=len(report.removed),
                 bytes=report.bytes, errors=len(report.errors))  # fmt: skip
    return report
