"""dicomnode router: an Orthanc Python plugin that hands stable radiograph studies to the node.

Runs inside Orthanc's own Python interpreter (the system python3 that orthanc-python links
against): standard library and the `orthanc` module only.

- When a study becomes stable (`StableAge` seconds without a new instance), its id is queued.
  The Orthanc Book warns against calling the REST API from inside the change callback
  (deadlocks), so the callback only queues; a background thread does the work.
- The worker selects the study's instances whose series Modality is in `DicomNode.Modalities`
  (CR, DX by default; radiographic Secondary Capture carries CR/DX too) and whose Manufacturer
  is not "dicomnode" (the node's own SR/SC), so the node's results never go back to it: no
  routing loop. Instances already handed over carry the `DicomNodeRouted` metadata and are
  not sent again when the study becomes stable a second time (e.g. when the results arrive).
- push mode: C-STORE through `/modalities/{Modality}/store` (synchronous);
  pull mode: `POST {NodeUrl}/api/orthanc/studies/{id}` with the instance ids; the node then
  fetches them over Orthanc's REST API.
- A failed hand-over is logged and retried with exponential backoff, forever. Pending study
  ids are kept in an Orthanc global property (in Orthanc's own database, so with the
  PostgreSQL index too), so a restart of Orthanc does not lose them.
- Orthanc Explorer gets a small extension that shows the node's outcome on the study page
  (read from the study metadata the node records: AIOutcome, AIProbability, AIModel).
"""

from __future__ import annotations

import contextlib
import json
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

try:  # only present inside Orthanc; the pure helpers below are importable anywhere
    import orthanc

    if not hasattr(orthanc, "RegisterOnChangeCallback"):  # e.g. the repo's orthanc/ folder
        orthanc = None
except ImportError:
    orthanc = None

OWN_MANUFACTURER = "dicomnode"
ROUTED_METADATA = "DicomNodeRouted"
#: Orthanc global property (plugins use numbers >= 1024) holding the pending study ids.
PENDING_PROPERTY = 7071
MODES = ("push", "pull")

OUTCOME_WORDS = {
    "positive": "fracture suspected",
    "doubt": "indeterminate, review",
    "negative": "no fracture detected",
}
UNTRAINED_LABEL = "UNTRAINED DEMO"


class ConfigurationError(ValueError):
    """The `DicomNode` section of the Orthanc configuration is not usable."""


class StudyGone(Exception):
    """The study was deleted from Orthanc before it could be routed."""


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class RouterConfig:
    mode: str = "push"
    modality: str = "DICOMNODE"
    modalities: tuple[str, ...] = ("CR", "DX")
    node_url: str = "http://127.0.0.1:8000"
    node_token: str = ""
    retry_initial_seconds: float = 5.0
    retry_max_seconds: float = 300.0
    timeout: float = 120.0
    explorer_extension: bool = True


_KEYS = {
    "Mode": "mode",
    "Modality": "modality",
    "Modalities": "modalities",
    "NodeUrl": "node_url",
    "NodeToken": "node_token",
    "RetryInitialSeconds": "retry_initial_seconds",
    "RetryMaxSeconds": "retry_max_seconds",
    "Timeout": "timeout",
    "ExplorerExtension": "explorer_extension",
}


def read_config(full: dict[str, Any]) -> RouterConfig:
    """The plugin's settings from Orthanc's whole configuration (its `DicomNode` section)."""
    section = full.get("DicomNode", {})
    if not isinstance(section, dict):
        raise ConfigurationError("DicomNode must be a JSON object")
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise ConfigurationError(f"DicomNode: unknown setting(s) {', '.join(unknown)}")
    values: dict[str, Any] = {_KEYS[k]: v for k, v in section.items()}
    mode = str(values.get("mode", "push")).lower()
    if mode not in MODES:
        raise ConfigurationError(f"DicomNode.Mode must be push or pull, not {mode!r}")
    values["mode"] = mode
    modalities = values.get("modalities", ["CR", "DX"])
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise ConfigurationError("DicomNode.Modalities must be a list of strings")
    values["modalities"] = tuple(m.strip().upper() for m in modalities if m.strip())
    for key in ("retry_initial_seconds", "retry_max_seconds", "timeout"):
        if key in values:
            try:
                values[key] = float(values[key])
            except (TypeError, ValueError):
                raise ConfigurationError(f"DicomNode: {key} must be a number") from None
            if values[key] <= 0:
                raise ConfigurationError(f"DicomNode: {key} must be positive")
    if "node_url" in values:
        values["node_url"] = str(values["node_url"]).rstrip("/")
    if mode == "pull" and not values.get("node_url"):
        raise ConfigurationError("DicomNode.NodeUrl is needed in pull mode")
    if mode == "push" and not str(values.get("modality", "DICOMNODE")):
        raise ConfigurationError("DicomNode.Modality is needed in push mode")
    values["explorer_extension"] = bool(values.get("explorer_extension", True))
    return RouterConfig(**values)


def backoff_seconds(attempts: int, *, initial: float, maximum: float) -> float:
    """Delay after `attempts` failures: initial, 2x, 4x, ... capped at `maximum`."""
    return float(min(maximum, initial * 2 ** max(0, attempts - 1)))


def select_instances(
    series: list[dict[str, Any]], *, modalities: tuple[str, ...], routed: set[str]
) -> list[str]:
    """Orthanc ids of the instances to hand to the node.

    `series` is Orthanc's `GET /studies/{id}/series` answer. Kept: series whose Modality is in
    `modalities` and whose Manufacturer is not the node's, instances not yet in `routed`.
    """
    chosen: list[str] = []
    for item in series:
        tags = item.get("MainDicomTags", {})
        if str(tags.get("Manufacturer", "")).strip().casefold() == OWN_MANUFACTURER:
            continue
        if str(tags.get("Modality", "")).strip().upper() not in modalities:
            continue
        chosen += [i for i in item.get("Instances", []) if i not in routed]
    return chosen


def outcome_text(metadata: dict[str, str]) -> str | None:
    """The line Orthanc Explorer shows (the JavaScript below does the same), or None."""
    outcome = metadata.get("AIOutcome")
    if not outcome:
        return None
    text = "AI triage: " + OUTCOME_WORDS.get(outcome, outcome)
    with contextlib.suppress(ValueError):
        text += f" {float(metadata.get('AIProbability', '')):.2f}"
    if UNTRAINED_LABEL in metadata.get("AIModel", ""):
        text += f" ({UNTRAINED_LABEL})"
    return text


EXPLORER_JS = """
/* dicomnode: AI triage outcome on the study page (dicomnode_router.py) */
(function () {
  var WORDS = __WORDS__;
  function dicomnodeOutcomeText(m) {
    if (!m.AIOutcome) return null;
    var text = 'AI triage: ' + (WORDS[m.AIOutcome] || m.AIOutcome);
    var p = parseFloat(m.AIProbability);
    if (!isNaN(p)) text += ' ' + p.toFixed(2);
    if ((m.AIModel || '').indexOf('__UNTRAINED__') >= 0) text += ' (__UNTRAINED__)';
    return text;
  }
  $('#study').live('pagebeforeshow', function () {
    var box = $('#dicomnode-ai');
    if (box.length == 0) {
      box = $('<ul data-role="listview" data-inset="true" id="dicomnode-ai"></ul>');
      $('#study-info').before(box);
    }
    box.empty().hide();
    $.ajax({
      url: '../studies/' + $.mobile.pageData.uuid + '/metadata?expand',
      dataType: 'json',
      cache: false,
      success: function (m) {
        var text = dicomnodeOutcomeText(m);
        if (text === null) return;
        box.append($('<li data-role="list-divider"></li>').text('dicomnode (not a diagnosis)'));
        box.append($('<li class="dicomnode-outcome"></li>').text(text));
        try { box.listview('refresh'); } catch (e) { box.listview(); }
        box.show();
      }
    });
  });
})();
""".replace("__WORDS__", json.dumps(OUTCOME_WORDS)).replace("__UNTRAINED__", UNTRAINED_LABEL)


class Pending:
    """Study ids waiting to be handed over: attempts made and when the next one is due."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, float]] = {}

    def add(self, study_id: str, now: float) -> bool:
        if study_id in self.items:
            return False
        self.items[study_id] = {"attempts": 0, "due": now}
        return True

    def due(self, now: float) -> list[str]:
        return [s for s, v in sorted(self.items.items(), key=lambda kv: kv[1]["due"])
                if v["due"] <= now]  # fmt: skip

    def failed(self, study_id: str, now: float, config: RouterConfig) -> tuple[int, float]:
        item = self.items[study_id]
        item["attempts"] += 1
        delay = backoff_seconds(int(item["attempts"]), initial=config.retry_initial_seconds,
                                maximum=config.retry_max_seconds)  # fmt: skip
        item["due"] = now + delay
        return int(item["attempts"]), delay

    def remove(self, study_id: str) -> None:
        self.items.pop(study_id, None)

    def next_due(self) -> float | None:
        return min((v["due"] for v in self.items.values()), default=None)

    def dumps(self) -> str:
        return json.dumps(sorted(self.items))

    @classmethod
    def loads(cls, text: str, now: float) -> Pending:
        pending = cls()
        try:
            ids = json.loads(text) if text else []
        except json.JSONDecodeError:
            ids = []
        for study_id in ids if isinstance(ids, list) else []:
            if isinstance(study_id, str):
                pending.add(study_id, now)
        return pending


# ------------------------------------------------------------------ the plugin (in Orthanc)


class Router:
    """The background worker: queue of stable studies → hand-over with retries."""

    def __init__(self, config: RouterConfig, *, can_mark: bool) -> None:
        self.config = config
        self.can_mark = can_mark
        self.queue: queue.Queue[str] = queue.Queue()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.pending = Pending()

    # -- life cycle (called from Orthanc's change callback: nothing slow here)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="dicomnode-router", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.queue.put("")
        if self.thread is not None:
            self.thread.join(timeout=self.config.timeout + 5)

    def study_stable(self, study_id: str) -> None:
        self.queue.put(study_id)

    # -- the worker thread

    def _run(self) -> None:
        self.pending = Pending.loads(orthanc.GetGlobalProperty(PENDING_PROPERTY, ""), time.time())
        if self.pending.items:
            orthanc.LogWarning(f"dicomnode router: resuming {len(self.pending.items)} pending "
                               "stud(y/ies) after a restart")  # fmt: skip
        while not self.stopping.is_set():
            next_due = self.pending.next_due()
            wait = None if next_due is None else max(0.0, next_due - time.time())
            try:
                study_id = self.queue.get(timeout=wait)
            except queue.Empty:
                study_id = ""
            if self.stopping.is_set():
                break
            if study_id and self.pending.add(study_id, time.time()):
                self._save()
            for due in self.pending.due(time.time()):
                if self.stopping.is_set():
                    break
                self._attempt(due)

    def _save(self) -> None:
        orthanc.SetGlobalProperty(PENDING_PROPERTY, self.pending.dumps())

    def _attempt(self, study_id: str) -> None:
        try:
            count = self._route(study_id)
        except StudyGone:
            orthanc.LogWarning(f"dicomnode router: study {study_id} was deleted; not routed")
            self.pending.remove(study_id)
        except (orthanc.OrthancException, OSError, ValueError) as exc:
            attempts, delay = self.pending.failed(study_id, time.time(), self.config)
            orthanc.LogWarning(
                f"dicomnode router: handing study {study_id} to the node failed "
                f"(attempt {attempts}, {self.config.mode}): {exc}; retrying in {delay:.0f} s"
            )
            self._save()
            return
        else:
            self.pending.remove(study_id)
            if count:
                orthanc.LogWarning(f"dicomnode router: study {study_id}: {count} instance(s) "
                                   f"handed to the node ({self.config.mode})")  # fmt: skip
        self._save()

    def _route(self, study_id: str) -> int:
        try:
            series = json.loads(orthanc.RestApiGet(f"/studies/{study_id}/series"))
        except orthanc.OrthancException as exc:
            if exc.args and exc.args[0] == _unknown_resource():
                raise StudyGone(study_id) from None
            raise
        candidates = select_instances(series, modalities=self.config.modalities, routed=set())
        routed = {i for i in candidates if self._is_routed(i)}
        instances = [i for i in candidates if i not in routed]
        if not instances:
            return 0
        if self.config.mode == "push":
            self._push(instances)
        else:
            self._pull(study_id, instances)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") + " " + self.config.mode
        if self.can_mark:
            for instance_id in instances:
                orthanc.RestApiPut(f"/instances/{instance_id}/metadata/{ROUTED_METADATA}", stamp)
        return len(instances)

    def _is_routed(self, instance_id: str) -> bool:
        if not self.can_mark:
            return False  # the node acknowledges a re-sent instance without a second job
        names = json.loads(orthanc.RestApiGet(f"/instances/{instance_id}/metadata"))
        return ROUTED_METADATA in names

    def _push(self, instances: list[str]) -> None:
        body = {"Resources": instances, "Synchronous": True,
                "Timeout": int(self.config.timeout)}  # fmt: skip
        answer = json.loads(
            orthanc.RestApiPost(f"/modalities/{self.config.modality}/store", json.dumps(body))
        )
        failed = int(answer.get("FailedInstancesCount", 0) or 0)
        if failed:
            raise ValueError(f"{failed} of {len(instances)} instance(s) were not accepted")

    def _pull(self, study_id: str, instances: list[str]) -> None:
        request = urllib.request.Request(
            f"{self.config.node_url}/api/orthanc/studies/{study_id}",
            data=json.dumps({"instances": instances}).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        if self.config.node_token:
            request.add_header("Authorization", f"Bearer {self.config.node_token}")
        with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
            if response.status not in (200, 202):
                raise ValueError(f"the node answered HTTP {response.status}")


def _unknown_resource() -> int:
    return int(getattr(getattr(orthanc, "ErrorCode", None), "UNKNOWN_RESOURCE", 17))


_router: Router | None = None


def _on_change(change_type: int, level: int, resource_id: str) -> None:
    # Runs in Orthanc's change thread: queue and return, never call the REST API here.
    assert _router is not None
    if change_type == orthanc.ChangeType.STABLE_STUDY:
        _router.study_stable(resource_id)
    elif change_type == orthanc.ChangeType.ORTHANC_STARTED:
        _router.start()
    elif change_type == orthanc.ChangeType.ORTHANC_STOPPED:
        _router.stop()


def _initialise() -> None:
    global _router
    full = json.loads(orthanc.GetConfiguration())
    try:
        config = read_config(full)
    except ConfigurationError as exc:
        orthanc.LogError(f"dicomnode router disabled: {exc}")
        return
    can_mark = ROUTED_METADATA in full.get("UserMetadata", {})
    if not can_mark:
        orthanc.LogWarning(f"dicomnode router: declare {ROUTED_METADATA} in UserMetadata so "
                           "instances already routed are not sent again")  # fmt: skip
    _router = Router(config, can_mark=can_mark)
    orthanc.RegisterOnChangeCallback(_on_change)
    if config.explorer_extension:
        orthanc.ExtendOrthancExplorer(EXPLORER_JS)
    target = config.modality if config.mode == "push" else config.node_url
    orthanc.LogWarning(f"dicomnode router: {config.mode} mode to {target}, modalities "
                       f"{','.join(config.modalities)}")  # fmt: skip


if orthanc is not None:
    _initialise()
