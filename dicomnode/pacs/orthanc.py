"""Working with an Orthanc PACS over its REST API (pyorthanc).

Two jobs, each a small persistent queue worked by a loop that the composition root starts:

- `OutcomeRecorder`: once a study's SR has been delivered to the destination that is this
  Orthanc, record the study's outcome on the study in Orthanc: metadata `AIOutcome`,
  `AIProbability`, `AIModel` (declared in Orthanc's `UserMetadata`), and from Orthanc 1.12 a
  label (`AI_POSITIVE`, `AI_DOUBT`, `AI_NEGATIVE`) so users can find suspected fractures.
  Setting the same values twice is harmless, so a retry is always safe.
- `OrthancPull`: the router plugin in pull mode says "study X is ready"; the node fetches the
  study's instances (`GET /instances/{id}/file`) and ingests each through
  `scp.store_bytes`, exactly the path a C-STORE takes (spool, job, dedup, status policy).

Both queues are JSON files in the data dir (written atomically), so a restart of the node or
an Orthanc that is down for a while loses nothing: failed items are retried with the delivery
backoff.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog
from pyorthanc import Orthanc as PyOrthanc

from dicomnode import MANUFACTURER
from dicomnode.backoff import backoff_seconds
from dicomnode.config import Settings
from dicomnode.durable import atomic_write
from dicomnode.ingest.scp import StoreContext, StoreStatus, audit_received, store_bytes
from dicomnode.model.card import ModelCard
from dicomnode.store.jobs import Jobs
from dicomnode.store.tables import Result, ResultKind
from dicomnode.uids import hash_uid

log = structlog.stdlib.get_logger("dicomnode.orthanc")

#: Study metadata names; they must be declared in Orthanc's `UserMetadata`.
METADATA_OUTCOME = "AIOutcome"
METADATA_PROBABILITY = "AIProbability"
METADATA_MODEL = "AIModel"
#: Label per outcome (Orthanc >= 1.12).
LABELS = {"positive": "AI_POSITIVE", "doubt": "AI_DOUBT", "negative": "AI_NEGATIVE"}
LABELS_SINCE = (1, 12)
#: Calling AE title recorded on jobs ingested by pulling from Orthanc.
PULL_CALLING_AE = "ORTHANC-PULL"

_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


class OrthancError(Exception):
    """Orthanc answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class OrthancUnavailable(Exception):
    """Orthanc's REST API could not be reached."""


class InstanceTooLarge(Exception):
    """The instance file is larger than the node accepts (`node.max_dataset_mb`); it was not
    downloaded whole (refused on its Content-Length, or as soon as the body passed the limit)."""


def parse_version(version: str) -> tuple[int, ...] | None:
    """(1, 12, 1) from "1.12.1"; None when it is not numeric (e.g. "mainline")."""
    match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    if match is None:
        return None
    return tuple(int(p) for p in match.groups(default="0"))


def supports_labels(version: str) -> bool:
    """Labels exist from Orthanc 1.12; a mainline (unnumbered) build is taken as recent."""
    parsed = parse_version(version)
    return True if parsed is None else parsed[:2] >= LABELS_SINCE


def is_orthanc_id(value: str) -> bool:
    return bool(_ORTHANC_ID.match(value))


@dataclass(frozen=True)
class OutcomeRecord:
    """What the node writes on a study in Orthanc."""

    outcome: str
    probability: float
    model: str

    def metadata(self) -> dict[str, str]:
        return {
            METADATA_OUTCOME: self.outcome,
            METADATA_PROBABILITY: f"{self.probability:.4f}",
            METADATA_MODEL: self.model,
        }

    @property
    def label(self) -> str | None:
        return LABELS.get(self.outcome)


# ------------------------------------------------------------------------------ REST client


class OrthancApi:
    """The few REST calls the node makes, through pyorthanc, with errors made explicit."""

    def __init__(self, *, url: str, username: str = "", password: str = "",
                 timeout: float = 30.0) -> None:  # fmt: skip
        self.client = PyOrthanc(url, username or None, password or None,
                                return_raw_response=True, timeout=timeout)  # fmt: skip

    def close(self) -> None:
        self.client.close()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> httpx.Response:
        try:
            response = fn(*args, **kwargs)
        except httpx.TransportError as exc:
            raise OrthancUnavailable(f"{type(exc).__name__}: {exc}") from None
        assert isinstance(response, httpx.Response)
        if response.status_code >= 400:
            raise OrthancError(response.status_code, response.text[:300])
        return response

    def version(self) -> str:
        return str(self._call(self.client.get_system).json().get("Version", ""))

    def study_id(self, study_instance_uid: str) -> str | None:
        found = self._call(self.client.post, f"{self.client.url}/tools/lookup",
                           content=study_instance_uid.encode()).json()  # fmt: skip
        ids = [item["ID"] for item in found if item.get("Type") == "Study"]
        return ids[0] if ids else None

    def set_study_metadata(self, study_id: str, name: str, value: str) -> None:
        self._call(self.client.put, f"{self.client.url}/studies/{study_id}/metadata/{name}",
                   content=value.encode())  # fmt: skip

    def study_labels(self, study_id: str) -> list[str]:
        return list(self._call(self.client.get_studies_id_labels, study_id).json())

    def add_study_label(self, study_id: str, label: str) -> None:
        self._call(self.client.put_studies_id_labels_label, study_id, label)

    def remove_study_label(self, study_id: str, label: str) -> None:
        self._call(self.client.delete_studies_id_labels_label, study_id, label)

    def study_series(self, study_id: str) -> list[dict[str, Any]]:
        return list(self._call(self.client.get_studies_id_series, study_id).json())

    def instance_sop_uid(self, instance_id: str) -> str:
        info = self._call(self.client.get_instances_id, instance_id).json()
        return str(info.get("MainDicomTags", {}).get("SOPInstanceUID", ""))

    def instance_file(self, instance_id: str, *, max_bytes: int = 0) -> bytes:
        """The instance's DICOM file; with `max_bytes`, streamed and refused (InstanceTooLarge)
        once larger, so a huge instance never sits in memory."""
        if not max_bytes:
            return self._call(self.client.get_instances_id_file, instance_id).content
        url = f"{self.client.url}/instances/{instance_id}/file"
        try:
            with self.client.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise OrthancError(response.status_code, response.text[:300])
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise InstanceTooLarge(f"{int(declared)} bytes announced")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InstanceTooLarge(f"more than {max_bytes} bytes received")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TransportError as exc:
            raise OrthancUnavailable(f"{type(exc).__name__}: {exc}") from None


def api_from_settings(settings: Settings) -> OrthancApi:
    o = settings.orthanc
    return OrthancApi(url=o.url, username=o.username, password=o.password, timeout=o.timeout)


def record_outcome(api: OrthancApi, *, study_instance_uid: str, record: OutcomeRecord) -> bool:
    """Write `record` on the study in Orthanc; False if Orthanc does not have the study."""
    study_id = api.study_id(study_instance_uid)
    if study_id is None:
        return False
    for name, value in record.metadata().items():
        api.set_study_metadata(study_id, name, value)
    if supports_labels(api.version()) and record.label:
        stale = set(LABELS.values()) & set(api.study_labels(study_id)) - {record.label}
        for label in sorted(stale):
            api.remove_study_label(study_id, label)
        api.add_study_label(study_id, record.label)
    return True


def radiograph_instances(series: list[dict[str, Any]], modalities: list[str]) -> list[str]:
    """Instance ids of the series to pull: wanted modality, not the node's own output."""
    chosen: list[str] = []
    for item in series:
        tags = item.get("MainDicomTags", {})
        if str(tags.get("Manufacturer", "")).strip().casefold() == MANUFACTURER.casefold():
            continue
        if str(tags.get("Modality", "")).strip().upper() in modalities:
            chosen += [str(i) for i in item.get("Instances", [])]
    return chosen


# --------------------------------------------------------------------- persistent work queue


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
            f.write(json.dumps(self._items).encode())

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


# ------------------------------------------------------------------------ outcome recording


def _work_queue(settings: Settings, file_name: str) -> WorkQueue:
    """A persistent work queue in the data dir, retried with the delivery backoff."""
    d = settings.delivery
    return WorkQueue(settings.data_dir / file_name, initial=d.backoff_initial_seconds,
                     maximum=d.backoff_max_seconds)  # fmt: skip


class OutcomeRecorder:
    """Record each reported study's outcome in Orthanc after its SR reached that Orthanc."""

    def __init__(self, *, settings: Settings, jobs: Jobs, card: Callable[[], ModelCard | None],
                 api: OrthancApi, wake: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.settings = settings
        self.jobs = jobs
        self.card = card
        self.api = api
        self.wake = wake
        self.salt = settings.node.log_salt
        self.queue = _work_queue(settings, "orthanc-outcomes.json")

    def on_delivered(self, destination: str, result: Result) -> None:
        """Outbox hook: an SR reached the Orthanc destination → queue its study."""
        if destination != self.settings.orthanc.destination or result.kind != ResultKind.SR:
            return
        try:
            self.queue.add([result.study_instance_uid])
        except OSError as exc:  # the delivery itself is recorded; say loudly what is missing
            log.error("cannot queue outcome recording", error=type(exc).__name__,
                      study=hash_uid(result.study_instance_uid, self.salt))  # fmt: skip
            return
        self.wake()

    def step(self) -> bool:
        uid = self.queue.due()
        if uid is None:
            return False
        bound = log.bind(study=hash_uid(uid, self.salt))
        study = self.jobs.study(uid)
        card = self.card()
        if study is None or study.outcome is None or study.max_probability is None:
            bound.warning("no reported outcome for a delivered study; nothing to record")
            self.queue.done(uid)
            return True
        record = OutcomeRecord(outcome=study.outcome, probability=study.max_probability,
                               model=card.display_name if card else "unknown")  # fmt: skip
        try:
            found = record_outcome(self.api, study_instance_uid=uid, record=record)
        except (OrthancError, OrthancUnavailable) as exc:
            attempts, delay = self.queue.failed(uid)
            hint = ""
            if isinstance(exc, OrthancError) and exc.status in (400, 404):
                hint = "declare AIOutcome, AIProbability, AIModel in Orthanc's UserMetadata"
            bound.warning("recording the outcome in Orthanc failed; will retry", reason=str(exc),
                          attempts=attempts, retry_in=delay, hint=hint or None)  # fmt: skip
            return True
        if found:
            bound.info("outcome recorded in Orthanc", outcome=record.outcome,
                       probability=round(record.probability, 4))  # fmt: skip
        else:
            bound.warning("study not found in Orthanc; outcome not recorded")
        self.queue.done(uid)
        return True


# ------------------------------------------------------------------------------- pull path


class OrthancPull:
    """Fetch instances from Orthanc by REST and ingest them like received C-STOREs."""

    def __init__(self, *, settings: Settings, store: StoreContext, api: OrthancApi,
                 wake: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.api = api
        self.wake = wake
        self.salt = settings.node.log_salt
        self.queue = _work_queue(settings, "orthanc-pull.json")

    def request(self, orthanc_study_id: str, instances: list[str] | None) -> int:
        """Queue a study's instances (the given ones, or its radiograph series); returns how
        many were queued. Raises ValueError (bad ids), LookupError (no such study),
        OrthancUnavailable/OrthancError (listing the study failed)."""
        if not is_orthanc_id(orthanc_study_id):
            raise ValueError("not an Orthanc study id")
        if instances is None:
            try:
                series = self.api.study_series(orthanc_study_id)
            except OrthancError as exc:
                if exc.status == 404:
                    raise LookupError("Orthanc has no such study") from None
                raise
            instances = radiograph_instances(series, self.settings.orthanc.modalities)
        bad = [i for i in instances if not is_orthanc_id(i)]
        if bad:
            raise ValueError(f"{len(bad)} instance id(s) are not Orthanc ids")
        queued = self.queue.add(instances)
        log.info("pull from Orthanc requested", study=hash_uid(orthanc_study_id, self.salt),
                 instances=len(instances), queued=queued)  # fmt: skip
        self.wake()
        return queued

    def step(self) -> bool:
        instance_id = self.queue.due()
        if instance_id is None:
            return False
        bound = log.bind(instance=hash_uid(instance_id, self.salt))
        try:
            with _drop_if_gone(self.queue, instance_id, bound):
                sop_uid = self.api.instance_sop_uid(instance_id)
                if sop_uid and self.store.jobs.exists(sop_uid):
                    self.queue.done(instance_id)  # already here (C-STORE or an earlier pull)
                    return True
                data = self.api.instance_file(instance_id,
                                              max_bytes=self.store.max_dataset_bytes)  # fmt: skip
        except InstanceTooLarge:
            # Refused for good, like a C-STORE over the limit; not retried (it would not fit).
            self.queue.done(instance_id)
            reason = "dataset larger than max_dataset_mb"
            bound.warning("pulled instance refused", status="0xA700", reason=reason)
            audit_received(self.store, calling=PULL_CALLING_AE, study_uid=None,
                           status=StoreStatus.OUT_OF_RESOURCES, reason=reason,
                           association=None)  # fmt: skip
            return True
        except (OrthancError, OrthancUnavailable) as exc:
            attempts, delay = self.queue.failed(instance_id)
            bound.warning("fetching from Orthanc failed; will retry", reason=str(exc),
                          attempts=attempts, retry_in=delay)  # fmt: skip
            return True
        if instance_id not in self.queue:
            return True
        status, reason = store_bytes(self.store, data, calling=PULL_CALLING_AE)
        if status == StoreStatus.SUCCESS:
            self.queue.done(instance_id)
            bound.debug("pulled instance ingested", detail=reason)
        elif status == StoreStatus.OUT_OF_RESOURCES:
            attempts, delay = self.queue.failed(instance_id)
            bound.warning("pulled instance not stored; will retry", reason=reason,
                          attempts=attempts, retry_in=delay)  # fmt: skip
        else:
            self.queue.done(instance_id)
            bound.warning("pulled instance refused", status=f"0x{int(status):04X}",
                          reason=reason)  # fmt: skip
        return True


@contextmanager
def _drop_if_gone(queue: WorkQueue, key: str, bound: Any) -> Iterator[None]:
    """A 404 means the instance was deleted from Orthanc: nothing to retry."""
    try:
        yield
    except OrthancError as exc:
        if exc.status != 404:
            raise
        queue.done(key)
        bound.warning("instance no longer in Orthanc; dropped")
