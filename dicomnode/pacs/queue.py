"""A small persistent work queue (JSON file in the data dir) for the Orthanc loops.

A restart of the node, or an Orthanc that is down for a while, loses nothing: failed items are
retried with the delivery backoff.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import structlog

from dicomnode.backoff import backoff_seconds
from dicomnode.config import Settings
from dicomnode.durable import atomic_write

log = structlog.stdlib.get_logger("dicomnode.orthanc")


class WorkQueue:
    """Keys with an attempt count and a due time, kept in a JSON file (atomic writes)."""

    def __init__(self, path: Path, *, initial: float, maximum: float) -> None:
        self.path = path
        self.initial = initial
        self.maximum = maximum
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, float]] = self._load()

    def _load(self) -> dict[str, dict[str, float]]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, json.JSONDecodeError):
            log.error("work queue file unreadable; starting empty", file=self.path.name)
            return {}
        return {str(k): {"attempts": float(v.get("attempts", 0)), "due": float(v.get("due", 0))}
                for k, v in data.items() if isinstance(v, dict)}  # fmt: skip

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path) as f:
            f.write(json.dumps(self._items).encode("utf-8"))

    def add(self, keys: list[str]) -> int:
        """Queue `keys` (due now); returns how many were not queued already."""
        with self._lock:
            new = [k for k in dict.fromkeys(keys) if k not in self._items]
            for key in new:
                self._items[key] = {"attempts": 0, "due": 0.0}
            if new:
                self._save()
            return len(new)

    def due(self) -> str | None:
        now = time.time()
        with self._lock:
            ready = [(v["due"], k) for k, v in self._items.items() if v["due"] <= now]
            return min(ready)[1] if ready else None

    def done(self, key: str) -> None:
        with self._lock:
            if self._items.pop(key, None) is not None:
                self._save()

    def failed(self, key: str) -> tuple[int, float]:
        with self._lock:
            item = self._items.setdefault(key, {"attempts": 0, "due": 0.0})
            item["attempts"] += 1
            delay = backoff_seconds(int(item["attempts"]), initial=self.initial,
                                    maximum=self.maximum)  # fmt: skip
            item["due"] = time.time() + delay
            self._save()
            return int(item["attempts"]), delay

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items


def work_queue(settings: Settings, file_name: str) -> WorkQueue:
    """A persistent work queue in the data dir, retried with the delivery backoff."""
    d = settings.delivery
    return WorkQueue(settings.data_dir / file_name, initial=d.backoff_initial_seconds,
                     maximum=d.backoff_max_seconds)  # fmt: skip
