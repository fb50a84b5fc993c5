"""`Jobs`: the node's SQL in one object, composed of the queue, study reports and deliveries.

Each part owns its tables' SQL in its own module (`queue`, `reports`, `deliveries`) and can be
used alone; `Jobs` puts them over one engine, so callers that need several parts (the pipeline,
the API, the node) hold one object, and adds what spans all three: a node's leases. A live node
renews its leases on jobs, report claims and deliveries in one transaction (`renew_leases`) and
releases them at start-up and shutdown (`release_owned`).
"""

from __future__ import annotations

from datetime import timedelta

from dicomnode.store.deliveries import Deliveries
from dicomnode.store.queue import Queue, Received
from dicomnode.store.reports import StudyReports
from dicomnode.store.tables import utcnow

__all__ = ["Jobs", "Received"]


class Jobs(Queue, StudyReports, Deliveries):
    """Repository over the node's tables. Thread-safe: one short session per call."""

    def release_owned(self, owner: str) -> int:
        """At start-up or shutdown: jobs, report claims and deliveries this node held are
        released at once (not after their lease); returns the number of jobs requeued."""
        with self.session() as s:
            n = self._release_jobs(s, owner)
            self._release_reports(s, owner)
            self._release_deliveries(s, owner)
            s.commit()
            return n

    def renew_leases(self, *, owner: str, lease_seconds: float) -> int:
        """Heartbeat of a live node: extend every lease it still holds (jobs, report claims,
        deliveries being sent). A lease already taken over by another node is not touched."""
        expires = utcnow() + timedelta(seconds=lease_seconds)
        with self.session() as s:
            n = self._renew_jobs(s, owner, expires)
            n += self._renew_reports(s, owner, expires)
            n += self._renew_deliveries(s, owner, expires)
            s.commit()
            return n
