"""dicomnode.ingest.slots: negotiating connections cannot take the slots of max_associations, a
new connection always gets in (the oldest negotiating one makes room), one address cannot push
the others out, and no sequence of events leaks a slot."""

from __future__ import annotations

import random

import pytest

from dicomnode.ingest.slots import Slots


def slots(**kwargs: int) -> Slots:
    limits = {"max_associations": 2, "max_negotiating": 4, "max_negotiating_per_address": 2}
    return Slots(**(limits | kwargs))


def test_negotiating_connections_do_not_use_association_slots():
    a = slots()
    for i in range(4):
        assert a.open(f"idle{i}", f"10.0.0.{i}") == []
    assert a.requested("real1") and a.requested("real2")  # both slots free despite 4 idle
    assert not a.requested("real3")  # the third association: local limit exceeded
    a.close("real1")
    assert a.requested("real3")
    assert a.counts() == (4, 2)


def test_the_oldest_of_an_address_makes_room_for_its_new_connection():
    a = slots()
    a.open("x1", "10.0.0.9")
    a.open("x2", "10.0.0.9")
    dropped = a.open("x3", "10.0.0.9")
    assert [(d.key, d.reason) for d in dropped] == [("x1", "max_negotiating_per_address reached")]
    assert a.counts() == (2, 0)


def test_past_the_total_the_busiest_address_gives_way_not_a_lone_peer():
    a = slots()
    a.open("lone", "10.0.0.1")  # the oldest of all, but its address holds only one
    a.open("x1", "10.0.0.9")
    a.open("y1", "10.0.0.8")
    a.open("x2", "10.0.0.9")
    dropped = a.open("new", "10.0.0.7")
    assert [(d.key, d.address, d.reason) for d in dropped] == [
        ("x1", "10.0.0.9", "max_negotiating reached")
    ]


def test_finished_connections_are_forgotten_without_close():
    ended: set[str] = set()
    a = Slots(max_associations=1, max_negotiating=2, max_negotiating_per_address=2,
                  finished=lambda key: key in ended)  # fmt: skip
    assert a.requested("lost")
    ended.add("lost")  # its close never came
    assert a.requested("next")


@pytest.mark.parametrize("seed", range(20))
def test_budgets_hold_under_any_sequence_of_events(seed):
    rng = random.Random(seed)
    a = slots(max_associations=3, max_negotiating=5, max_negotiating_per_address=3)
    negotiating: dict[int, str] = {}
    associated: set[int] = set()
    for key in range(400):
        action = rng.random()
        if action < 0.5:
            address = rng.choice(["10.0.0.1", "10.0.0.2", "10.0.0.3"])
            dropped = a.open(key, address)
            assert key not in {d.key for d in dropped}  # the newcomer always gets in
            for d in dropped:
                assert negotiating.pop(d.key) == d.address  # only negotiating ones go
            negotiating[key] = address
        elif action < 0.75 and negotiating:
            chosen = rng.choice(list(negotiating))
            del negotiating[chosen]
            if a.requested(chosen):
                associated.add(chosen)
            else:
                assert len(associated) == 3
        elif associated or negotiating:
            chosen = rng.choice(list(associated | set(negotiating)))
            associated.discard(chosen)
            negotiating.pop(chosen, None)
            a.close(chosen)
        counts = a.counts()
        assert counts == (len(negotiating), len(associated))
        assert counts[0] <= 5 and counts[1] <= 3
        assert max([*map(list(negotiating.values()).count, negotiating.values()), 0]) <= 3
