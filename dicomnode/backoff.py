"""The one retry delay policy: exponential backoff, capped.

Used by the delivery outbox, the Orthanc work queues and jobs waiting for a resource (disk full),
each with its own `initial` and `maximum` from the configuration.
"""

from __future__ import annotations

#: Doubling stops here: 2**30 times any initial delay is past every cap, and a larger exponent
#: would overflow a float after enough attempts.
_MAX_DOUBLINGS = 30


def backoff_seconds(attempts: int, *, initial: float, maximum: float) -> float:
    """Delay before attempt `attempts + 1`: initial, 2×, 4×, … capped at `maximum`."""
    return float(min(maximum, initial * 2 ** min(max(0, attempts - 1), _MAX_DOUBLINGS)))
