"""The on-disk spool: received instances and produced results, written durably.

Paths come from a salted hash of the SOP Instance UID, never the UID itself, so a hostile UID
(`../../x`) cannot name a path. Writes go to a temporary file in the same file system, are
fsynced, renamed into place, and the directory is fsynced: after `write` returns, the bytes
survive a crash.

Several nodes may share one spool directory (scale-out): relative paths do not depend on the
node, and each node names its temporary files with its own tag, so that at start it removes only
its own leftovers (and any that are too old to belong to a write still in progress), never a
live node's partial write.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from dicomnode.durable import atomic_write

#: Suffix of an image's suspected regions, kept next to its header (kind "hdr").
REGIONS_SUFFIX = ".regions.json"


class SpoolFull(OSError):
    """Free space is below the configured minimum; the caller answers 0xA700."""


#: A temporary file older than this is a crashed write, whichever node made it.
STALE_TMP_SECONDS = 3600.0


class Spool:
    def __init__(
        self,
        root: Path,
        *,
        min_free_mb: int = 0,
        tmp_tag: str = "",
        stale_tmp_seconds: float = STALE_TMP_SECONDS,
    ) -> None:
        self.root = Path(root)
        self.min_free_bytes = min_free_mb * 1024 * 1024
        self.tmp = self.root / "tmp"
        # Only [A-Za-z0-9_] in file names; "in-" alone when the spool is not shared.
        self.tmp_prefix = f"in-{re.sub(r'[^A-Za-z0-9_]', '_', tmp_tag)[:32]}-" if tmp_tag else "in-"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._clean_tmp(stale_tmp_seconds)

    def _clean_tmp(self, stale_seconds: float) -> None:
        """Partial writes left by a crash are never acknowledged: remove this node's own and
        stale ones (another live node may be writing the rest right now)."""
        cutoff = time.time() - stale_seconds
        for leftover in self.tmp.iterdir():
            with contextlib.suppress(OSError):
                if self._owns(leftover.name) or leftover.stat().st_mtime < cutoff:
                    leftover.unlink()

    def _owns(self, name: str) -> bool:
        if self.tmp_prefix == "in-":  # an untagged spool is not shared: every leftover is ours
            return True
        return name.startswith(self.tmp_prefix)

    def relative_path(self, key: str, *, kind: str, suffix: str = ".dcm") -> str:
        """`kind`: "in" (received), "out" (results), "hdr" (kept headers; with
        `REGIONS_SUFFIX`, the image's suspected regions next to its header)."""
        digest = hashlib.sha256(f"{kind}\x1f{key}".encode()).hexdigest()
        return f"{kind}/{digest[:2]}/{digest[2:4]}/{digest[:40]}{suffix}"

    def path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError("path escapes the spool")
        return path

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def check_space(self, incoming: int = 0) -> None:
        if self.min_free_bytes and self.free_bytes() - incoming < self.min_free_bytes:
            raise SpoolFull("free space below the configured minimum")

    def write_bytes(self, relative: str, data: bytes | memoryview) -> Path:
        return self.write_stream(relative, [data])

    def write_stream(self, relative: str, chunks: Iterable[bytes | memoryview]) -> Path:
        """Durably write `chunks` to `relative`; nothing is left behind on failure."""
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(target, tmp_dir=self.tmp, prefix=self.tmp_prefix) as fh:
            for chunk in chunks:
                fh.write(chunk)
        return target

    def exists(self, relative: str) -> bool:
        return self.path(relative).is_file()

    def delete(self, relative: str) -> bool:
        try:
            self.path(relative).unlink()
            return True
        except FileNotFoundError:
            return False
