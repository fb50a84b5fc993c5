"""Retention policy: what expired, as a pure function of the rows, the clock and the policy.
(How a run deletes it is `dicomnode.retention.run`.)

Rules (a `*_days` of 0 keeps that kind forever):
- Nothing of a study still in progress is touched: a job queued or processing, an image received
  less than `study_stable_seconds` ago, or classified images not yet in a report.
- Nothing whose results are not delivered is touched: a result with a delivery pending or failed
  protects its study's images, result files and records. Failed deliveries are retried or given
  up by a person, not by the clock.
- Source image (spool "in" file): once every result of its study is delivered (classified and
  skipped images), or `spool_days` after it was received (failed images wait that long so they
  can be retried). Its header stays until the records go: a late image's report needs it.
- Result file (spool "out"): `results_days` after its last delivery (after creation when it has
  no destination).
- Records (job, study, result and delivery rows, plus any file left of the study):
  `records_days` after the study's last activity.
- Orthanc (optional): the node's own result series, `orthanc_results_days` after Orthanc last
  updated them (recognised by the node's UID root and series description).
- Audit events: `audit_days` after they were recorded, in batches of short transactions (a
  large trail never holds the database's write lock for long); the run records one event
  saying how many went (none when nothing did).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from dicomnode.objects.series import OWN_SERIES_DESCRIPTIONS

_TERMINAL = frozenset({"classified", "skipped", "failed"})
_DONE_WITH = frozenset({"classified", "skipped"})  # images nothing more will be done with

Kind = Literal["source", "result", "study"]


# --- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryRow:
    state: str
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class ImageRow:
    job_id: int
    state: str
    spool_path: str  # "" once retention deleted the source
    header_path: str
    received_at: datetime
    #: The suspected regions kept next to the header ("" when the image has none).
    regions_path: str = ""


@dataclass(frozen=True)
class ResultRow:
    result_id: int
    path: str  # "" once retention deleted the file
    created_at: datetime
    deliveries: tuple[DeliveryRow, ...] = ()
    job_id: int | None = None

    @property
    def undelivered(self) -> bool:
        return any(d.state != "delivered" for d in self.deliveries)

    @property
    def last_delivered_at(self) -> datetime | None:
        times = [aware(d.delivered_at) for d in self.deliveries if d.delivered_at]
        return max(times) if times else None


@dataclass(frozen=True)
class StudyRow:
    study_instance_uid: str
    last_received_at: datetime
    reported_job_count: int = 0
    reported_at: datetime | None = None
    images: tuple[ImageRow, ...] = ()
    results: tuple[ResultRow, ...] = ()


@dataclass(frozen=True)
class RetentionPolicy:
    spool_days: float = 7.0
    results_days: float = 30.0
    records_days: float = 90.0
    stable_seconds: float = 10.0
    orthanc_results_days: float = 0.0
    audit_days: float = 2190.0  # six years; see RetentionSettings.audit_days

    @classmethod
    def from_settings(cls, settings: Any) -> RetentionPolicy:
        r = settings.retention
        return cls(
            spool_days=r.spool_days,
            results_days=r.results_days,
            records_days=r.records_days,
            stable_seconds=settings.node.study_stable_seconds,
            orthanc_results_days=r.orthanc_results_days,
            audit_days=r.audit_days,
        )


@dataclass(frozen=True)
class Deletion:
    """One thing to delete: a source image, a result file, or a whole study's records."""

    kind: Kind
    study_instance_uid: str
    paths: tuple[str, ...]  # spool-relative files
    reason: str
    job_ids: tuple[int, ...] = ()
    result_ids: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "study": self.study_instance_uid,
            "paths": list(self.paths),
            "reason": self.reason,
            "jobs": list(self.job_ids),
            "results": list(self.result_ids),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Deletion:
        return cls(
            kind=data["kind"],
            study_instance_uid=data["study"],
            paths=tuple(data["paths"]),
            reason=data["reason"],
            job_ids=tuple(data["jobs"]),
            result_ids=tuple(data["results"]),
        )


@dataclass(frozen=True)
class OrthancSeries:
    orthanc_id: str
    series_instance_uid: str
    series_description: str
    last_update: datetime


# --- the pure selection -----------------------------------------------------------------------


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _older(value: datetime | None, days: float, now: datetime) -> bool:
    return days > 0 and value is not None and now - aware(value) >= timedelta(days=days)


def in_progress(study: StudyRow, *, now: datetime, stable_seconds: float) -> bool:
    """Work may still happen on this study: leave all of it alone."""
    if any(i.state not in _TERMINAL for i in study.images):
        return True
    if now - aware(study.last_received_at) < timedelta(seconds=stable_seconds):
        return True
    classified = sum(i.state == "classified" for i in study.images)
    return classified > study.reported_job_count


def last_activity(study: StudyRow) -> datetime:
    times = [aware(study.last_received_at)]
    times += [aware(study.reported_at)] if study.reported_at else []
    times += [aware(r.created_at) for r in study.results]
    times += [t for r in study.results if (t := r.last_delivered_at) is not None]
    return max(times)


def select_expired(
    studies: Iterable[StudyRow], *, now: datetime, policy: RetentionPolicy
) -> list[Deletion]:
    """What the policy deletes at `now`. Pure: same rows, clock and policy, same answer."""
    now = aware(now)
    out: list[Deletion] = []
    for study in studies:
        if in_progress(study, now=now, stable_seconds=policy.stable_seconds):
            continue
        if any(r.undelivered for r in study.results):
            continue  # never anything whose results are not delivered
        uid = study.study_instance_uid
        if _older(last_activity(study), policy.records_days, now):
            paths = [
                p for i in study.images for p in (i.spool_path, i.header_path, i.regions_path) if p
            ]
            paths += [r.path for r in study.results if r.path]
            out.append(
                Deletion(
                    kind="study",
                    study_instance_uid=uid,
                    paths=tuple(paths),
                    reason=f"records older than records_days={policy.records_days:g}",
                    job_ids=tuple(i.job_id for i in study.images),
                    result_ids=tuple(r.result_id for r in study.results),
                )
            )
            continue
        delivered = any(r.deliveries for r in study.results)  # all delivered (checked above)
        for image in study.images:
            if not image.spool_path:
                continue
            if delivered and image.state in _DONE_WITH:
                reason = "results of the study delivered"
            elif _older(image.received_at, policy.spool_days, now):
                reason = f"older than spool_days={policy.spool_days:g}"
            else:
                continue
            out.append(
                Deletion(
                    kind="source",
                    study_instance_uid=uid,
                    paths=(image.spool_path,),
                    reason=reason,
                    job_ids=(image.job_id,),
                )
            )
        for result in study.results:
            if not result.path:
                continue
            since = result.last_delivered_at if result.deliveries else result.created_at
            if _older(since, policy.results_days, now):
                out.append(
                    Deletion(
                        kind="result",
                        study_instance_uid=uid,
                        paths=(result.path,),
                        reason=f"delivered over results_days={policy.results_days:g} ago",
                        result_ids=(result.result_id,),
                    )
                )
    return out


def select_orthanc_series(
    series: Iterable[OrthancSeries], *, now: datetime, days: float, uid_root: str
) -> list[OrthancSeries]:
    """The node's own result series in Orthanc older than `days` (0: none)."""
    now = aware(now)
    return [
        s
        for s in series
        if days > 0
        and s.series_instance_uid.startswith(uid_root)
        and s.series_description in OWN_SERIES_DESCRIPTIONS
        and _older(s.last_update, days, now)
    ]


@dataclass(frozen=True)
class Mark:
    """A deletion a run has started (`id`: its row in `retention_mark`)."""

    id: int
    deletion: Deletion
