"""One retry delay policy for deliveries, Orthanc work queues and jobs waiting for a resource."""

from __future__ import annotations

from dicomnode.backoff import backoff_seconds


def test_the_delay_doubles_from_the_initial_one_and_stops_at_the_cap():
    delays = [backoff_seconds(n, initial=5, maximum=60) for n in range(0, 7)]
    assert delays == [5.0, 5.0, 10.0, 20.0, 40.0, 60.0, 60.0]


def test_a_delivery_retried_for_weeks_keeps_its_capped_delay():
    # With max_attempts = 0 (retry forever) the attempt count grows without bound; 2**1100
    # overflows a float, which once ended the whole outbox pass with an OverflowError.
    assert backoff_seconds(1100, initial=5.0, maximum=600.0) == 600.0
