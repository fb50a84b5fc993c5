"""The persistent outbox: deliver results to every destination, retrying with backoff.

Each result is a file under the data dir and one Delivery row per destination. A failed
attempt schedules the next one (exponential backoff, capped); results survive restarts because
the rows and files do. The same SOP Instance UIDs are sent on every retry, so a peer never gets
duplicates.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import structlog

from dicomnode.audit import Audit, AuditAction, AuditEventID, AuditOutcome
from dicomnode.backoff import backoff_seconds
from dicomnode.config import Settings
from dicomnode.deliver.scu import AssociationFailed, SendOutcome, client_tls_context, send_files
from dicomnode.deliver.stow import send_stow
from dicomnode.destinations import AnyDestination, DicomwebDestination
from dicomnode.imaging.reasons import reason
from dicomnode.metrics import Metrics
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from dicomnode.store.tables import Delivery, Result, ResultKind, utcnow

log = structlog.stdlib.get_logger("dicomnode.outbox")


def deliver_due(
    *,
    jobs: Jobs,
    spool: Spool,
    settings: Settings,
    metrics: Metrics,
    owner: str = "outbox",
    on_delivered: Callable[[str, Result], None] | None = None,
    audit: Audit | None = None,
) -> int:
    """One pass over due deliveries, claimed for `owner` (the node) so that no other node
    sends them at the same time; returns how many were delivered.

    `on_delivered(destination name, result)` is called after each recorded success (e.g. to
    record the outcome in Orthanc once the SR is there); it must not raise. Each attempt is
    counted per destination, study and outcome in the audit trail (when one is given).
    """
    by_destination: dict[str, list[tuple[Delivery, Result]]] = defaultdict(list)
    claimed = jobs.claim_deliveries(owner=owner, lease_seconds=settings.database.lease_seconds)
    for delivery, result in claimed:
        by_destination[delivery.destination].append((delivery, result))
    destinations = {d.name: d for d in settings.destinations}
    delivered = 0
    for name, items in by_destination.items():
        sent: Counter[tuple[str, AuditOutcome, str]] = Counter()
        destination = destinations.get(name)
        if destination is None:
            for delivery, result in items:
                _failed(jobs, delivery, settings, None, reason("destination_gone"),
                        give_up=True, metrics=metrics, tally=(sent, result))  # fmt: skip
            _audit_sent(audit, settings, name, sent)
            continue
        for delivery, result in [item for item in items if item[1].kind not in destination.objects]:
            # Queued before the destination's `objects` left this kind out: not sent.
            _failed(jobs, delivery, settings, None, reason("destination_kind", kind=result.kind),
                    give_up=True, metrics=metrics, tally=(sent, result))  # fmt: skip
        items = [item for item in items if item[1].kind in destination.objects]
        paths = {spool.path(result.path): (delivery, result) for delivery, result in items}
        missing = [p for p in paths if not p.is_file()]
        for path in missing:
            delivery, result = paths.pop(path)
            _failed(jobs, delivery, settings, None, reason("result_missing"), give_up=True,
                    metrics=metrics, tally=(sent, result))  # fmt: skip
        peer = f"{name} ({describe_destination(destination)})"
        if not paths:
            _audit_sent(audit, settings, peer, sent)
            continue
        bound = log.bind(destination=name, count=len(paths))
        try:
            outcomes = _send(list(paths), destination, settings)
        except (AssociationFailed, OSError, RuntimeError, ValueError) as exc:
            # Anything that ends the attempt is a failed attempt with backoff: an escaping
            # error would retry at once, forever, with nothing visible in the API.
            why = str(exc) if isinstance(exc, AssociationFailed) else _describe(exc)
            bound.warning("delivery attempt failed", reason=why)
            for delivery, result in paths.values():
                _failed(jobs, delivery, settings, None, why, metrics=metrics,
                        tally=(sent, result))  # fmt: skip
            _audit_sent(audit, settings, peer, sent)
            continue
        for outcome in outcomes:
            delivery, result = paths[outcome.path]
            if outcome.ok:
                assert delivery.id is not None
                jobs.delivery_succeeded(delivery.id, status=outcome.status or 0,
                                        at=outcome.answered_at)  # fmt: skip
                metrics.delivered.inc()
                delivered += 1
                sent[(result.study_instance_uid, AuditOutcome.SUCCESS, "sent")] += 1
                if result.job_id is not None and result.kind == ResultKind.SC:
                    _observe_end_to_end(jobs, result.job_id, metrics)
                if on_delivered is not None:
                    on_delivered(name, result)
            else:
                error = outcome.error or reason("peer_status", status=f"{outcome.status:04X}")
                _failed(jobs, delivery, settings, outcome.status, error, metrics=metrics,
                        tally=(sent, result))  # fmt: skip
        _audit_sent(audit, settings, peer, sent)
        bound.info("delivery attempt finished", delivered=sum(o.ok for o in outcomes))
    return delivered


def _send(paths: list[Path], destination: AnyDestination, settings: Settings) -> list[SendOutcome]:
    """One attempt to `destination`, by C-STORE or by STOW-RS: the same outcomes either way."""
    timeout = settings.delivery.timeout_seconds
    if isinstance(destination, DicomwebDestination):
        return send_stow(paths, destination=destination, timeout=timeout)
    tls = client_tls_context(settings.node) if destination.tls else None
    return send_files(paths, destination=destination, calling_ae_title=settings.node.ae_title,
                      timeout=timeout, tls=tls)  # fmt: skip


def describe_destination(destination: AnyDestination) -> str:
    """Where a destination is, as logs and the audit trail name it (never its credentials)."""
    if isinstance(destination, DicomwebDestination):
        return destination.url
    return f"{destination.ae_title}@{destination.host}:{destination.port}"


def _audit_sent(
    audit: Audit | None,
    settings: Settings,
    peer: str,
    sent: Counter[tuple[str, AuditOutcome, str]],
) -> None:
    if audit is None or not sent:
        return
    audit.save([
        audit.make(event=AuditEventID.INSTANCES_TRANSFERRED, action=AuditAction.READ,
                   actor=settings.node.ae_title, peer=peer, outcome=outcome,
                   study_uid=study_uid, object=f"study:{audit.hash(study_uid)}", count=count,
                   detail=detail)
        for (study_uid, outcome, detail), count in sent.items()
    ])  # fmt: skip


def _describe(exc: BaseException) -> str:
    """An error as stored in `last_error`: its type and message (network errors carry no PHI)."""
    return reason("not_sent", error=f"{type(exc).__name__}: {exc}"[:300])


def _failed(
    jobs: Jobs,
    delivery: Delivery,
    settings: Settings,
    status: int | None,
    error: str,
    *,
    metrics: Metrics,
    give_up: bool = False,
    tally: tuple[Counter[tuple[str, AuditOutcome, str]], Result] | None = None,
) -> None:
    attempts = delivery.attempts + 1
    limit = settings.delivery.max_attempts
    retry_at = None
    if not give_up and (limit == 0 or attempts < limit):
        delay = backoff_seconds(
            attempts,
            initial=settings.delivery.backoff_initial_seconds,
            maximum=settings.delivery.backoff_max_seconds,
        )
        retry_at = utcnow() + timedelta(seconds=delay)
        metrics.delivery_retries.inc()
    assert delivery.id is not None
    jobs.delivery_failed(delivery.id, status=status, error=error, retry_at=retry_at)
    if tally is not None:
        counter, result = tally
        outcome = AuditOutcome.MINOR_FAILURE if retry_at else AuditOutcome.SERIOUS_FAILURE
        then = "will retry" if retry_at else "gave up"
        counter[(result.study_instance_uid, outcome, f"not sent, {then}: {error}")] += 1


def _observe_end_to_end(jobs: Jobs, job_id: int, metrics: Metrics) -> None:
    job = jobs.get_job(job_id)
    if job is not None:
        received = job.received_at
        metrics.end_to_end_seconds.observe((utcnow() - _aware(received)).total_seconds())


def _aware(value):
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
