"""`send=true` of an HTTP analysis: the objects it wrote go to the outbox, as the node's own.

Through `work.results.queue_file` (spool file + Result + one Delivery per destination), so
retries and the API's delivery states work as for objects the pipeline made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dicomnode.config import Destination, DicomwebDestination
from dicomnode.objects.outputs import OUTPUTS
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from dicomnode.store.tables import ResultKind
from dicomnode.work.results import destinations_taking, queue_file


def queue_analysis(
    directory: Path,
    result: dict[str, Any],
    *,
    spool: Spool,
    jobs: Jobs,
    destinations: Sequence[Destination | DicomwebDestination],
) -> dict[str, Any]:
    """Queue every object of an analysis result (its `files` by output kind, at every level)
    for the `destinations` that take its kind; the `send` field of the result. Idempotent by
    SOP Instance UID."""
    names: list[tuple[ResultKind, str]] = []
    for item in [result, *result.get("studies", []), *result.get("images", [])]:
        files = item.get("files", {})
        names += [(ResultKind(o.kind), files[o.kind]) for o in OUTPUTS if o.kind in files]
    queued = []
    for kind, name in names:
        row = queue_file(directory / name, spool=spool, jobs=jobs, kind=kind,
                         destinations=destinations_taking(destinations, str(kind)))  # fmt: skip
        deliveries = jobs.deliveries_for([row.id] if row.id is not None else [])
        queued.append({"kind": str(kind), "sop_instance_uid": row.sop_instance_uid,
                       "deliveries": [{"destination": d.destination, "state": str(d.state)}
                                      for d in deliveries]})  # fmt: skip
    every = [d.name for d in destinations]
    return {"requested": True, "destinations": every, "results": queued}
