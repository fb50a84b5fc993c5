"""Recording each reported study's outcome on the study in Orthanc.

Once a study's SR has been delivered to the destination that is this Orthanc, `OutcomeRecorder`
writes the study's outcome on it: metadata `AIOutcome`, `AIProbability`, `AIModel` (declared in
Orthanc's `UserMetadata`), and from Orthanc 1.12 a label (`AI_POSITIVE`, `AI_DOUBT`,
`AI_NEGATIVE`) so users can find suspected fractures. Setting the same values twice is
harmless, so a retry is always safe. The studies to record wait in a persistent queue
(`dicomnode.pacs.queue`) worked by a loop that the composition root starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from dicomnode.config import Settings
from dicomnode.model.card import ModelCard
from dicomnode.pacs.orthanc import OrthancApi, OrthancError, OrthancUnavailable
from dicomnode.pacs.queue import work_queue
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
        self.queue = work_queue(settings, "orthanc-outcomes.json")

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
