"""Several nodes on one database (SQLite and a real PostgreSQL): claims, leases, fencing.

Each "node" here is its own engine (its own connection pool), as in separate processes; the
node processes themselves are exercised in tests/integration/test_scale.py.
"""

import threading
from collections import Counter

from dicomnode.store.db import create_db_engine, make_engine
from dicomnode.store.jobs import Jobs, Received
from dicomnode.store.tables import DeliveryState, JobState, ResultKind
from tests.support.jobs import claim

STUDY = "1.2.3"


def _item(sop, study=STUDY, modality="CR"):
    return Received(
        sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.1",
        study_instance_uid=study, series_instance_uid=study + ".1", modality=modality,
        body_part="HAND", view_position="PA", calling_ae_title="SCU", spool_path="p",
        study={"patient_name": "X", "study_description": "Hand"},
    )  # fmt: skip


def _two_nodes(url):
    make_engine(url).dispose()
    return Jobs(create_db_engine(url)), Jobs(create_db_engine(url))


def _run(threads):
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_jobs_are_claimed_once_across_nodes_and_workers(database_url):
    a, b = _two_nodes(database_url)
    for i in range(80):
        a.enqueue(_item(f"1.2.3.{i}", study=f"1.2.{i % 7}"))
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(jobs, owner):
        while (job := claim(jobs, owner=owner, lease_seconds=60)) is not None:
            assert jobs.finish(job.id, state=JobState.SKIPPED, owner=owner, reason="x")
            with lock:
                claimed.append((owner, job.id))

    _run([threading.Thread(target=worker, args=(jobs, f"{name}{i}"))
          for name, jobs in (("a", a), ("b", b)) for i in range(3)])  # fmt: skip
    ids = [job_id for _, job_id in claimed]
    assert len(ids) == 80 and len(set(ids)) == 80
    assert {owner[0] for owner, _ in claimed} == {"a", "b"}  # both nodes got work
    assert all(j.attempts == 1 for j in a.list_jobs(limit=1000))


def test_images_of_one_new_study_arriving_at_two_nodes_at_once_all_succeed(database_url):
    a, b = _two_nodes(database_url)
    results: list[tuple[int, bool]] = []

    def receive(jobs, i):
        results.append(jobs.enqueue(_item(f"1.2.3.{i}", modality="DX" if i % 2 else "CR")))

    _run([threading.Thread(target=receive, args=(a if i % 2 else b, i)) for i in range(12)])
    assert len(results) == 12 and all(created for _, created in results)
    study = a.study(STUDY)
    assert study.modalities == "CR,DX" and study.study_description == "Hand"


def test_a_dead_nodes_job_returns_after_its_lease_and_its_late_outcome_is_refused(database_url):
    a, b = _two_nodes(database_url)
    a.enqueue(_item("1.2.3.4"))
    job = claim(a, owner="node-a", lease_seconds=60)
    assert claim(b, owner="node-b", lease_seconds=60) is None  # leased: not claimable
    assert a.renew_leases(owner="node-a", lease_seconds=-1) == 1  # now expired
    again = claim(b, owner="node-b", lease_seconds=60)
    assert again.id == job.id and again.attempts == 2
    # node A was only paused: its outcome comes too late and is refused (fencing)
    assert not a.finish(job.id, state=JobState.FAILED, owner="node-a", reason="late")
    assert a.renew_leases(owner="node-a", lease_seconds=60) == 0  # cannot renew a lost lease
    assert b.finish(job.id, state=JobState.CLASSIFIED, owner="node-b", probability=0.5)
    done = a.get_job(job.id)
    assert done.state == JobState.CLASSIFIED and done.reason is None


def test_renewal_keeps_a_long_job_with_its_live_node(database_url):
    a, b = _two_nodes(database_url)
    a.enqueue(_item("1.2.3.4"))
    claim(a, owner="node-a", lease_seconds=-1)  # would be expired already ...
    assert a.renew_leases(owner="node-a", lease_seconds=60) == 1  # ... but the node is alive
    assert claim(b, owner="node-b", lease_seconds=60) is None


def _classified_study(jobs, n=3):
    for i in range(n):
        jobs.enqueue(_item(f"1.2.3.{i}"))
        job = claim(jobs, owner="w", lease_seconds=60)
        jobs.finish(job.id, state=JobState.CLASSIFIED, owner="w", probability=0.4)


def test_a_study_report_version_is_claimed_by_exactly_one_node(database_url):
    a, b = _two_nodes(database_url)
    _classified_study(a)
    wins: list[tuple[str, tuple[str, int]]] = []
    barrier = threading.Barrier(6)

    def report(jobs, owner):
        barrier.wait()
        got = jobs.claim_study_report(owner=owner, lease_seconds=60, stable_seconds=0)
        if got is not None:
            wins.append((owner, got))

    _run([threading.Thread(target=report, args=(jobs, f"{name}{i}"))
          for name, jobs in (("a", a), ("b", b)) for i in range(3)])  # fmt: skip
    assert len(wins) == 1 and wins[0][1] == (STUDY, 1)
    winner = wins[0][0]
    loser = "b0" if winner != "b0" else "a0"
    assert not b.record_report(study_instance_uid=STUDY, version=1, job_count=3,
                               outcome="doubt", max_probability=0.4, owner=loser)  # fmt: skip
    assert a.record_report(study_instance_uid=STUDY, version=1, job_count=3, outcome="doubt",
                           max_probability=0.4, owner=winner)  # fmt: skip
    # reported: nobody may build another version from the same images
    assert b.claim_study_report(owner="b9", lease_seconds=60, stable_seconds=0) is None
    study = a.study(STUDY)
    assert study.report_version == 1 and study.report_owner is None
    # a late image makes version 2 due, once
    a.enqueue(_item("1.2.3.99"))
    late = claim(a, owner="w", lease_seconds=60)
    a.finish(late.id, state=JobState.CLASSIFIED, owner="w", probability=0.9)
    assert b.claim_study_report(owner="b1", lease_seconds=60, stable_seconds=0) == (STUDY, 2)
    assert a.claim_study_report(owner="a1", lease_seconds=60, stable_seconds=0) is None


def test_a_dead_reporters_claim_expires_and_a_failed_build_backs_off(database_url):
    a, b = _two_nodes(database_url)
    _classified_study(a)
    assert a.claim_study_report(owner="a", lease_seconds=-1, stable_seconds=0) == (STUDY, 1)
    assert b.claim_study_report(owner="b", lease_seconds=60, stable_seconds=0) == (STUDY, 1)
    assert not a.record_report(study_instance_uid=STUDY, version=1, job_count=3,
                               outcome="doubt", max_probability=0.4, owner="a")  # fmt: skip
    b.release_study_report(STUDY, owner="b", retry_after=3600)
    assert a.claim_study_report(owner="a", lease_seconds=60, stable_seconds=0) is None
    b.release_study_report(STUDY, owner="nobody")  # not the holder: no effect
    assert a.study(STUDY).report_lease_expires_at is not None


def test_deliveries_are_sent_by_one_node_and_return_when_it_dies(database_url):
    a, b = _two_nodes(database_url)
    for i in range(30):
        a.add_result(kind=ResultKind.SC, sop_instance_uid=f"9.{i}", study_instance_uid=STUDY,
                     path=f"out/{i}", destinations=["pacs", "archive"])  # fmt: skip
    got: dict[str, list[int]] = {}
    barrier = threading.Barrier(2)

    def claim(jobs, owner):
        barrier.wait()
        got[owner] = [d.id for d, _ in jobs.claim_deliveries(owner=owner, lease_seconds=60,
                                                             limit=40)]  # fmt: skip

    _run([threading.Thread(target=claim, args=(a, "a")),
          threading.Thread(target=claim, args=(b, "b"))])  # fmt: skip
    counts = Counter(got["a"] + got["b"])
    assert len(counts) == 60 and set(counts.values()) == {1}
    # node a dies holding its deliveries: after the lease they are due again, for b
    assert b.claim_deliveries(owner="b", lease_seconds=60) == []
    a.renew_leases(owner="a", lease_seconds=-1)
    taken = b.claim_deliveries(owner="b", lease_seconds=60)
    assert sorted(d.id for d, _ in taken) == sorted(got["a"])
    for delivery, _ in taken:
        b.delivery_succeeded(delivery.id, status=0)
    states = Counter(d.state for d in a.deliveries_for(list(range(1, 31))))
    assert states[DeliveryState.DELIVERED] == len(got["a"])
    # a node restarting under its id releases what it held at once
    assert b.release_owned("b") == 0
    assert len(a.claim_deliveries(owner="a", lease_seconds=60)) == len(got["b"])
