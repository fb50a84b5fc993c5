"""Every result kind the node makes can be recorded and queued, on each database it supports
(PostgreSQL keeps the kinds as an enum type: migration 0005_gsps adds GSPS to it)."""

from __future__ import annotations

from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.tables import ResultKind


def test_every_result_kind_is_recorded_and_queued(database_url: str) -> None:
    jobs = Jobs(make_engine(database_url))
    for number, kind in enumerate(ResultKind, start=1):
        result = jobs.add_result(kind=kind, sop_instance_uid=f"1.2.3.{number}",
                                 study_instance_uid="1.2.3", path=f"out/{number}.dcm",
                                 destinations=["pacs"])  # fmt: skip
        assert result.id is not None
        [delivery] = jobs.deliveries_for([result.id])
        assert delivery.destination == "pacs"
    kinds = {r.kind for r in jobs.results_for_study("1.2.3", ResultKind.GSPS)}
    assert kinds == {ResultKind.GSPS}
