"""The SCP's association slots: which connections may hold them, two budgets instead of one.

pynetdicom counts every accepted connection against `maximum_associations` from the moment it
is accepted, before the peer has said who it is. A dozen idle or trickling connections then
lock every modality out. Here a connection is *negotiating* until its whole A-ASSOCIATE-RQ has
arrived, and only then asks for one of `max_associations` slots (refused when none is free).
Negotiating connections have their own small budget, `max_negotiating` in all and
`max_negotiating_per_address` per source address. When a new connection would exceed it, the
oldest negotiating connection is dropped, not the new one: a real peer sends its A-ASSOCIATE-RQ
within milliseconds of connecting, so it is never the oldest for long, while connections that
only hold a place are. The budget per address keeps one host from pushing the others out.

Pure bookkeeping with a lock: keys are opaque (the SCP uses pynetdicom's Association objects);
what "dropping" a connection means is the caller's business.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Dropped:
    """A negotiating connection dropped to make room, and why (PHI-free)."""

    key: Hashable
    address: str
    reason: str


class Slots:
    """The budgets of one SCP (all its ports together); every method is thread-safe."""

    def __init__(
        self,
        *,
        max_associations: int,
        max_negotiating: int,
        max_negotiating_per_address: int,
        finished: Callable[[Hashable], bool] = lambda _key: False,
    ) -> None:
        """`finished(key)` tells a connection that ended without `close` being called (its
        entry is then forgotten), so a lost notification cannot leak a slot."""
        self.max_associations = max_associations
        self.max_negotiating = max_negotiating
        self.max_per_address = max_negotiating_per_address
        self._finished = finished
        self._lock = threading.Lock()
        self._negotiating: dict[Hashable, str] = {}  # key -> address, oldest first
        self._associations: set[Hashable] = set()

    def open(self, key: Hashable, address: str) -> list[Dropped]:
        """A connection was accepted: it is negotiating. Returns the connections to drop so
        that both budgets hold (never `key` itself)."""
        with self._lock:
            self._prune()
            dropped = []
            per_address = Counter(self._negotiating.values())
            if per_address[address] >= self.max_per_address:
                oldest = next(k for k, a in self._negotiating.items() if a == address)
                dropped.append(Dropped(oldest, address, "max_negotiating_per_address reached"))
                del self._negotiating[oldest]
            elif len(self._negotiating) >= self.max_negotiating:
                # From the address that holds the most; of those, the oldest.
                busiest = max(per_address.values())
                oldest, its = next(
                    (k, a) for k, a in self._negotiating.items() if per_address[a] == busiest
                )
                dropped.append(Dropped(oldest, its, "max_negotiating reached"))
                del self._negotiating[oldest]
            self._negotiating[key] = address
            return dropped

    def requested(self, key: Hashable) -> bool:
        """The whole A-ASSOCIATE-RQ of `key` has arrived: True if it got one of the
        `max_associations` slots (held until `close`), False if all are taken."""
        with self._lock:
            self._negotiating.pop(key, None)
            if key in self._associations:
                return True
            self._prune()
            if len(self._associations) >= self.max_associations:
                return False
            self._associations.add(key)
            return True

    def close(self, key: Hashable) -> None:
        """The connection ended (or was dropped): whatever it held is free. Idempotent."""
        with self._lock:
            self._negotiating.pop(key, None)
            self._associations.discard(key)

    def counts(self) -> tuple[int, int]:
        """(negotiating, associations) now."""
        with self._lock:
            return len(self._negotiating), len(self._associations)

    def _prune(self) -> None:
        for key in [k for k in self._negotiating if self._finished(k)]:
            del self._negotiating[key]
        self._associations -= {k for k in self._associations if self._finished(k)}
