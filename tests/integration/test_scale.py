"""Scale-out: two node processes sharing a real PostgreSQL and a spool; one node on SQLite.

A burst of small real radiographs (RG3's CR, downsampled) is split between the nodes by two
dcmtk `storescu` runs in parallel; every study has images at both nodes. Results go to a
pynetdicom Storage SCP that records every instance it receives, so a result sent twice shows.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from sqlalchemy import text

from dicomnode.store.db import create_db_engine
from tests.support.data import RG3_UNCR, new_uid, testdata
from tests.support.dcmtk import StoreResult
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import NodeProcess, StatusSCP, storescu, wait_until

SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.88.33"}
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
STABLE_SECONDS = 5


def make_burst(directory: Path, *, images: int, studies: int) -> list[Path]:
    """`images` small CRs (RG3 downsampled to 294², real pixels), image i in study i % studies,
    so every study's images are spread over the whole burst (and over both senders)."""
    template = pydicom.dcmread(testdata(RG3_UNCR))
    pixels = np.ascontiguousarray(template.pixel_array[::6, ::6])  # above min_image_size
    template.PixelData = pixels.tobytes()
    template.Rows, template.Columns = pixels.shape
    directory.mkdir(parents=True, exist_ok=True)
    study_uids = [new_uid("scale-study", directory, s) for s in range(studies)]
    paths = []
    for i in range(images):
        ds = template.copy()
        ds.StudyInstanceUID = study_uids[i % studies]
        ds.SeriesInstanceUID = new_uid("scale-series", directory, i % studies)
        ds.SOPInstanceUID = new_uid("scale-image", directory, i)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i // studies + 1
        path = directory / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Cluster:
    """The nodes, their shared database and the destination that records what it receives."""

    url: str
    nodes: dict[str, NodeProcess]
    ports: dict[str, int]
    pacs: StatusSCP
    engine: Any = field(init=False)

    def __post_init__(self) -> None:
        self.engine = create_db_engine(self.url)

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(sql), params))

    def api(self, node: str, path: str) -> Any:
        response = httpx.get(self.nodes[node].api_url + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def logged(self, event: str) -> dict[str, int]:
        """Per node, how many times its log has `event` ("job finished": one line per job
        processed; "study reported": one per report version built)."""
        counts = {}
        for name, node in self.nodes.items():
            lines = node.log_path.read_text(errors="replace").splitlines()
            counts[name] = sum(1 for ln in lines if _event(ln) == event)
        return counts


def _event(line: str) -> str | None:
    try:
        return json.loads(line).get("event")
    except (json.JSONDecodeError, AttributeError):
        return None


def start_cluster(tmp_path, node_factory, url: str, names: list[str], *, lease: float) -> Cluster:
    pacs = StatusSCP(aet="PACS").start()
    shared_spool = tmp_path / "shared-spool"
    nodes, ports = {}, {}
    for name in names:
        config = write_node_config(
            tmp_path / name,
            # SC and SR: what the exactly-once checks count (a GSPS is queued as the SC is).
            destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                           "port": pacs.port, "objects": ["sr", "sc"]}],
            node={"node_id": name, "spool_dir": str(shared_spool),
                  "study_stable_seconds": STABLE_SECONDS},
            extra_sections={"database": {"url": url, "lease_seconds": lease}},
        )  # fmt: skip
        ports[name] = read_ports(config)[0]
        nodes[name] = node_factory(config, workdir=tmp_path / name)
    for node in nodes.values():  # started together: they migrate the empty database once
        node.wait_ready(timeout=240)
    return Cluster(url=url, nodes=nodes, ports=ports, pacs=pacs)


def send_in_parallel(sends: list[tuple[list[Path], int, str]]) -> list[StoreResult]:
    """One storescu per (files, port, calling AE title), all at once."""
    results: list[StoreResult | None] = [None] * len(sends)

    def run(i: int, files: list[Path], port: int, aet: str) -> None:
        results[i] = storescu(files, port=port, aet=aet, timeout=300)

    threads = [threading.Thread(target=run, args=(i, *s)) for i, s in enumerate(sends)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def wait_all_done(cluster: Cluster, sop_uids: set[str], studies: int, timeout: float) -> None:
    """Every job terminal, every study reported over all its images, every result delivered."""

    def done() -> bool:
        jobs = cluster.rows("SELECT state FROM job")
        if len(jobs) < len(sop_uids) or any(s not in ("CLASSIFIED", "SKIPPED", "FAILED")
                                            for (s,) in jobs):  # fmt: skip
            return False
        reported = cluster.rows(
            "SELECT count(*) FROM study s WHERE s.report_version > 0 AND s.reported_job_count ="
            " (SELECT count(*) FROM job j WHERE j.study_instance_uid = s.study_instance_uid"
            "  AND j.state = 'CLASSIFIED')"
        )[0][0]
        pending = cluster.rows("SELECT count(*) FROM delivery WHERE state <> 'DELIVERED'")[0][0]
        results = cluster.rows("SELECT count(*) FROM result")[0][0]
        return reported == studies and pending == 0 and results >= len(sop_uids) + studies

    wait_until(done, timeout=timeout, what="all jobs classified, reported and delivered",
               interval=0.5)  # fmt: skip


def check_exactly_once(cluster: Cluster, files: list[Path], studies: int, *,
                       resent_ok: set[str] = frozenset()) -> None:  # type: ignore[assignment]  # fmt: skip
    """Nothing lost, nothing duplicated: one job, one SC, one delivery per image; one SR per
    study version; the destination got each object once (`resent_ok`: objects whose sending
    node died mid-send may legitimately arrive twice: at-least-once delivery)."""
    sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    jobs = cluster.rows("SELECT sop_instance_uid, state, reason FROM job")
    assert {j[0] for j in jobs} == sent and len(jobs) == len(sent)
    assert [j for j in jobs if j[1] != "CLASSIFIED"] == []
    sc = cluster.rows("SELECT r.sop_instance_uid, j.sop_instance_uid FROM result r "
                      "JOIN job j ON j.id = r.job_id WHERE r.kind = 'SC'")  # fmt: skip
    assert len(sc) == len(sent) and {s[1] for s in sc} == sent
    sr = cluster.rows("SELECT study_instance_uid, version FROM result WHERE kind = 'SR'")
    versions = Counter((s[0], s[1]) for s in sr)
    assert set(versions.values()) == {1}  # one report per study version
    final = dict(cluster.rows("SELECT study_instance_uid, report_version FROM study"))
    assert len(final) == studies
    for study_uid, version in final.items():
        assert sorted(v for s, v in versions if s == study_uid) == list(range(1, version + 1))
    deliveries = cluster.rows("SELECT result_id, destination, state FROM delivery")
    assert len(deliveries) == len(sc) + len(sr) and {d[2] for d in deliveries} == {"DELIVERED"}
    received = Counter(cluster.pacs.stored)
    produced = {s[0] for s in sc} | {
        r[0] for r in cluster.rows("SELECT sop_instance_uid FROM result WHERE kind = 'SR'")
    }
    assert set(received) == produced
    twice = {uid for uid, n in received.items() if n > 1}
    assert twice <= set(resent_ok), f"{len(twice)} objects delivered more than once"
    classes = Counter(str(ds.SOPClassUID) for ds in cluster.pacs.datasets)
    assert classes[SC_CLASS] >= len(sent) and sum(classes[c] for c in SR_CLASSES) >= studies


# The 200-image burst runs on PostgreSQL; on SQLite (one node doing all the work) a smaller
# one keeps the suite within minutes on a 2-core machine (`pytest -m slow` runs 200 there too).
@pytest.mark.parametrize(
    ("backend", "images"),
    [("postgresql", 200), ("sqlite", 60),
     pytest.param("sqlite", 200, marks=pytest.mark.slow)],
)  # fmt: skip
def test_a_burst_split_between_nodes_is_processed_exactly_once(
    backend, images, tmp_path, node_factory, request
):
    """PostgreSQL: two nodes, each receives half of the burst. SQLite: one node receives both
    halves at once (the embedded default, one node)."""
    if backend == "postgresql":
        url, names = request.getfixturevalue("postgres_url"), ["node-a", "node-b"]
    else:
        url, names = f"sqlite:///{tmp_path / 'dicomnode.db'}", ["node-a"]
    studies = images // 10
    files = make_burst(tmp_path / "burst", images=images, studies=studies)
    cluster = start_cluster(tmp_path, node_factory, url, names, lease=30)
    try:
        port_b = cluster.ports[names[-1]]
        results = send_in_parallel([(files[0::2], cluster.ports["node-a"], "SENDER_A"),
                                    (files[1::2], port_b, "SENDER_B")])  # fmt: skip
        for result in results:
            result.check()
        sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        wait_all_done(cluster, sent, studies, timeout=600)
        check_exactly_once(cluster, files, studies)
        attempts = Counter(a for (a,) in cluster.rows("SELECT attempts FROM job"))
        assert attempts == {1: images}  # no job was ever taken over or repeated
        assert sum(cluster.logged("job finished").values()) == images
        if len(names) == 2:
            assert all(n > 0 for n in cluster.logged("job finished").values())  # both worked
        # built once: output UIDs are deterministic, so only the logs could show a double build
        assert sum(cluster.logged("study reported").values()) == studies
        # the worklist of either node shows every study and every image
        for name in names:
            assert len(cluster.api(name, "/api/jobs?limit=1000")["jobs"]) == images
            for study_uid in {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)
                              for f in files[:studies]}:  # fmt: skip
                study = cluster.api(name, f"/api/studies/{study_uid}")
                assert len(study["images"]) == 10 and study["report_version"] >= 1
                assert study["outcome"] in {"positive", "doubt", "negative"}
        # every study reported once (its images came through both nodes)
        assert {v for (v,) in cluster.rows("SELECT report_version FROM study")} == {1}
    finally:
        cluster.pacs.stop()
        cluster.engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_kill_9_of_a_node_mid_burst_loses_and_duplicates_nothing(
    backend, tmp_path, node_factory, request
):
    """PostgreSQL: node A dies mid-burst; node B takes over A's queued jobs at once and the
    job A held after its lease expires. SQLite (one node): the node restarts and resumes."""
    lease = 4.0
    if backend == "postgresql":
        url, names = request.getfixturevalue("postgres_url"), ["node-a", "node-b"]
    else:
        url, names = f"sqlite:///{tmp_path / 'dicomnode.db'}", ["node-a"]
    studies = 6
    files = make_burst(tmp_path / "burst", images=60, studies=studies)
    cluster = start_cluster(tmp_path, node_factory, url, names, lease=lease)
    survivor = names[-1]
    try:
        sends = [(files[0::2], cluster.ports["node-a"], "SENDER_A"),
                 (files[1::2], cluster.ports[survivor], "SENDER_B")]  # fmt: skip
        results: list[StoreResult] = []
        sender = threading.Thread(target=lambda: results.extend(send_in_parallel(sends)))
        sender.start()

        def a_is_busy() -> bool:
            received = cluster.rows(
                "SELECT count(*) FROM job WHERE calling_ae_title = 'SENDER_A'")[0][0]  # fmt: skip
            held = cluster.rows("SELECT count(*) FROM job WHERE state = 'PROCESSING' "
                                "AND lease_owner = 'node-a'")[0][0]  # fmt: skip
            return received >= 5 and held > 0

        wait_until(a_is_busy, timeout=300, what="node A mid-burst, holding a job", interval=0.02)
        cluster.nodes["node-a"].kill9()
        held = cluster.rows("SELECT id, lease_expires_at FROM job "
                            "WHERE state = 'PROCESSING' AND lease_owner = 'node-a'")  # fmt: skip
        held_deliveries = {r[0] for r in cluster.rows(
            "SELECT r.sop_instance_uid FROM delivery d JOIN result r ON r.id = d.result_id "
            "WHERE d.lease_owner = 'node-a' AND d.state = 'PENDING'")}  # fmt: skip
        sender.join(timeout=600)
        assert not sender.is_alive() and len(results) == 2
        if backend == "postgresql":
            results[1].check()  # node B's sender was never disturbed
        unacknowledged = [f for r in results for f, s in zip(r.files, r.statuses, strict=True)
                          if s != 0]  # fmt: skip
        if backend == "sqlite":  # one node: it restarts and resumes
            cluster.nodes["node-a"].start().wait_ready(timeout=240)
        # the sender keeps what was not acknowledged and sends it again, to a live node
        if unacknowledged:
            storescu(unacknowledged, port=cluster.ports[survivor], aet="SENDER_A").check()
        sent = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        wait_all_done(cluster, sent, studies, timeout=600)
        check_exactly_once(cluster, files, studies, resent_ok=held_deliveries)
        assert held, "node A held no job when it was killed"
        attempts = dict(cluster.rows("SELECT id, attempts FROM job"))
        for job_id, expires in held:
            assert attempts.pop(job_id) == 2  # taken over once
            if backend == "postgresql":  # by node B, and only after A's lease expired
                started = cluster.rows("SELECT started_at FROM job WHERE id = :i", i=job_id)
                assert started[0][0] >= expires
        assert set(attempts.values()) == {1}  # every other image processed exactly once
        assert len(cluster.api(survivor, "/api/jobs?limit=1000")["jobs"]) == len(files)
    finally:
        cluster.pacs.stop()
        cluster.engine.dispose()
