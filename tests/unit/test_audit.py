"""The audit trail: hashed objects, per-association counts, filters, pagination, export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dicomnode.audit import Audit, AuditAction, AuditEventID, AuditOutcome, clean_detail
from dicomnode.store.db import make_engine

STUDY = "1.2.826.0.1.3680043.8.498.77"


def _audit(tmp_path) -> Audit:
    return Audit(make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"), salt="salt")


def test_events_hold_hashes_not_uids_and_free_text_is_cleaned(tmp_path):
    audit = _audit(tmp_path)
    audit.record(
        event=AuditEventID.INSTANCES_TRANSFERRED,
        action=AuditAction.READ,
        actor="DICOMNODE",
        peer="pacs (ORTHANC@127.0.0.1:4242)",
        study_uid=STUDY,
        object=f"instance:{audit.hash(STUDY + '.1')}",
        outcome=AuditOutcome.MINOR_FAILURE,
        detail=f"not sent: Invalid value 'DOE^JOHN' in {STUDY}.1",
    )
    [event] = audit.query()
    text = " ".join(str(v) for v in event.model_dump().values())
    assert STUDY not in text and "DOE" not in text
    assert event.study == audit.hash(STUDY) and len(event.study) == 16
    assert event.outcome == 4 and event.action == "R" and event.peer.startswith("pacs")
    assert clean_detail("x 'secret' y") == "x '…' y"


def test_tally_counts_per_association_and_study_until_flushed(tmp_path):
    audit = _audit(tmp_path)
    fields = {
        "event": AuditEventID.INSTANCES_TRANSFERRED,
        "action": AuditAction.CREATE,
        "actor": "MODALITY",
    }
    for _ in range(3):
        audit.tally("assoc-1", study_uid=STUDY, detail="received", **fields)
    audit.tally(
        "assoc-1",
        study_uid=None,
        outcome=AuditOutcome.SERIOUS_FAILURE,
        detail="refused 0xA700",
        **fields,
    )
    audit.tally("assoc-2", study_uid=STUDY + "9", detail="received", **fields)
    assert audit.query() == []
    audit.flush("assoc-1")
    rows = {(e.count, e.outcome, e.study) for e in audit.query()}
    assert rows == {(3, 0, audit.hash(STUDY)), (1, 8, "")}
    audit.flush_all()
    assert len(audit.query()) == 3


def test_filters_pagination_and_export_in_time_order(tmp_path):
    audit = _audit(tmp_path)
    base = datetime(2030, 1, 1, tzinfo=UTC)
    for i in range(25):
        audit.save(
            [
                audit.make(
                    event=AuditEventID.USER_AUTHENTICATION
                    if i % 5 == 0
                    else AuditEventID.INSTANCES_TRANSFERRED,
                    action=AuditAction.EXECUTE,
                    actor=f"a{i % 2}",
                    study_uid=STUDY if i < 10 else None,
                    time=base + timedelta(minutes=i),
                )
            ]
        )
    assert len(audit.query(event="UserAuthentication")) == 5
    assert len(audit.query(study_uid=STUDY)) == 10
    assert len(audit.query(actor="a1")) == 12
    since = audit.query(since=base + timedelta(minutes=20))
    assert len(since) == 5
    first, second = audit.query(limit=10), audit.query(limit=10, offset=10)
    assert [e.id for e in first] == list(range(25, 15, -1)) and second[0].id == 15
    exported = list(
        audit.export(since=base + timedelta(minutes=3), until=base + timedelta(minutes=6))
    )
    assert [e["id"] for e in exported] == [4, 5, 6]
    assert exported[0]["time"].startswith("2030-01-01T00:03") and exported[0]["outcome"] == 0
    assert exported[0]["outcome_text"] == "success"
