"""Where HTTP uploads and their results live: `data_dir/uploads/<id>/`, deleted after a while.

Each analysis gets a directory named by a random id (`secrets.token_urlsafe`, 24 characters);
nothing in it is named after anything the client sent. It holds the upload, the results
(overlay PNG, SC/SR, XLSX) and `result.json`, which also lists the files that may be
downloaded. The directory's modification time is when the analysis finished (`result.json`
is renamed into it last); `expired_uploads` (pure) picks those older than the retention and
`remove_expired` deletes them.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from dicomnode.durable import atomic_write

log = structlog.stdlib.get_logger("dicomnode.uploads")

#: The folder under data_dir.
UPLOADS_DIR = "uploads"
RESULT_FILE = "result.json"
_ID = re.compile(r"^[A-Za-z0-9_-]{24}$")
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def expired_uploads(
    entries: Iterable[tuple[str, float]], *, now: float, retention_hours: float
) -> list[str]:
    """Ids of the (id, finished-at epoch seconds) entries older than the retention.

    A retention of 0 keeps everything. Pure: the caller lists the directory and deletes.
    """
    if retention_hours <= 0:
        return []
    limit = retention_hours * 3600.0
    return sorted(upload_id for upload_id, finished in entries if now - finished >= limit)


class UploadStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def create(self) -> tuple[str, Path]:
        """A new, empty, private directory and its id."""
        self.root.mkdir(parents=True, exist_ok=True)
        while True:
            upload_id = secrets.token_urlsafe(18)
            if _ID.match(upload_id):  # token_urlsafe(18) is always 24 characters of [-_\w]
                path = self.root / upload_id
                with contextlib.suppress(FileExistsError):
                    path.mkdir(mode=0o700)
                    return upload_id, path

    def directory(self, upload_id: str) -> Path | None:
        """The directory of a finished analysis, or None (unknown, malformed or expired id)."""
        if not _ID.match(upload_id):
            return None
        path = self.root / upload_id
        return path if (path / RESULT_FILE).is_file() else None

    def save_result(self, directory: Path, result: dict[str, Any]) -> None:
        """Write `result.json` with the one durable atomic write (`durable.atomic_write`: the
        last write of an analysis, fsynced and renamed into place, the directory fsynced), so a
        crash or a failure while serialising never leaves half a result that lists downloads."""
        with atomic_write(directory / RESULT_FILE, prefix=".result-", suffix=".tmp") as fh:
            for chunk in json.JSONEncoder().iterencode(result):
                fh.write(chunk.encode("utf-8"))

    def load_result(self, upload_id: str) -> dict[str, Any] | None:
        directory = self.directory(upload_id)
        if directory is None:
            return None
        try:
            data: dict[str, Any] = json.loads((directory / RESULT_FILE).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        return data

    def file(self, upload_id: str, name: str) -> Path | None:
        """A downloadable result file: only names `result.json` lists under "downloads"."""
        result = self.load_result(upload_id)
        if result is None or not _FILE.match(name) or name not in result.get("downloads", []):
            return None
        path = self.root / upload_id / name
        return path if path.is_file() else None

    def remove(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)

    def entries(self) -> list[tuple[str, float]]:
        """(id, modification time) of every upload directory."""
        if not self.root.is_dir():
            return []
        out = []
        for path in self.root.iterdir():
            if _ID.match(path.name) and path.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    out.append((path.name, path.stat().st_mtime))
        return out

    def remove_expired(
        self,
        *,
        retention_hours: float,
        now: float | None = None,
        on_removed: Callable[[str, dict[str, Any] | None], None] | None = None,
    ) -> int:
        """Delete uploads past the retention; returns how many. Each deletion is logged, and
        `on_removed(upload id, its result or None)` is called after it (the audit trail)."""
        expired = expired_uploads(
            self.entries(), now=time.time() if now is None else now,
            retention_hours=retention_hours,
        )  # fmt: skip
        for upload_id in expired:
            result = self.load_result(upload_id)
            self.remove(self.root / upload_id)
            if on_removed is not None:
                on_removed(upload_id, result)
            log.info("upload deleted by retention", upload=upload_id[:8],
                     retention_hours=retention_hours)  # fmt: skip
        return len(expired)
