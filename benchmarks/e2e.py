"""End to end: C-STORE to the node until its SC and SR are stored in a real Orthanc.

    PYTHONPATH=. .venv/bin/python benchmarks/e2e.py [--single 20] [--burst 500] [--stable 2]
        [--sender pynetdicom|storescu] [--timing node-db|orthanc-poll]

The node runs as a process (`dicomnode serve`) with the real efficientnet_b4 demo model and its
default runtime, delivering to Debian's Orthanc (tests/support's `Orthanc`). Measured, in one
run on one machine:
- inference alone: the same model and runtime in this process, ms/image for one
  preprocessed radiograph at a time (the reference of the targets), measured before the node
  starts and after it stops, the faster of the two kept (the VM's speed drifts by minutes);
  and images/s with two at once, one core each, as the node's two workers run a burst;
- single images: one uncompressed radiograph (RG3_UNCR, 6.2 MB) per new study. Sent by
  `--sender pynetdicom` (default: this process opens the association, C-STOREs the file as it
  is and releases; the clock starts just before the association request, so no process
  start-up is counted) or `--sender storescu` (one dcmtk process per image, its start-up
  included). Latency from the start of the send until the SC is stored in Orthanc (p50/p95),
  and until the SR is stored minus the study stability wait. `--timing node-db` (default)
  takes "stored" from the node's own delivery record (`delivery.delivered_at`, written after
  Orthanc answered the C-STORE with 0x0000, which Orthanc sends once it has stored the
  object, and the node released the association: a slight upper bound; UTC wall clock,
  compared with `time.time()` at the send start), waiting on a cheap
  local read of the node's SQLite every 25 ms, then checks once in Orthanc that the SC and SR
  are there. `--timing orthanc-poll` is the former way: poll Orthanc's /tools/lookup every
  10 ms, which costs Orthanc and this process CPU while the node classifies;
- a burst: `--burst` copies in studies of 10 sent by storescu in one association; sustained
  images/s from the start of the send until the last SC is stored (Orthanc's instance count,
  every 0.25 s); time for the SRs after the burst. `--burst 0` skips it;
- peak RSS of the node process (VmHWM) and its largest RSS sampled during the burst.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pynetdicom import AE, _config, evt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, median, percentile, table, write_json
from dicomnode.config import NodeSettings
from dicomnode.objects.outputs import SC, SR, OutputUIDs
from tests.support import data
from tests.support.nodecfg import orthanc_destination, read_ports, write_node_config
from tests.support.peers import NodeProcess, Orthanc
from tests.support.procs import wait_until

ENV = {"TCP_NODELAY": "1"}
SENDERS = ("pynetdicom", "storescu")
TIMINGS = ("node-db", "orthanc-poll")
TIMING_LABEL = {"node-db": "node's delivery record", "orthanc-poll": "Orthanc polled every 10 ms"}


def inference_alone(runtime: str, cache_dir: Path, rounds: int,
                    spinning: bool = False) -> dict[str, Any]:  # fmt: skip
    """ms/image for one image at a time (as the node runs a single image), and images/s with
    two images at once, one per thread (as the node's two workers run a burst)."""
    from dicomnode.imaging.preprocess import to_grayscale
    from dicomnode.model.classifier import load_classifier

    classifier = load_classifier(None, device="cpu", runtime=runtime, cache_dir=cache_dir,
                                 spinning=spinning, parallel=True)  # fmt: skip
    started = time.perf_counter()
    image = to_grayscale(pydicom.dcmread(data.testdata(data.RG3_UNCR)))
    preprocess_ms = (time.perf_counter() - started) * 1000
    classifier.predict(image)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        classifier.predict(image)
        times.append((time.perf_counter() - started) * 1000)

    def two_at_once(predict_batch: Callable[..., Any] = classifier.predict_batch) -> None:
        for _ in range(rounds):
            predict_batch([image], busy=True)

    pair = [threading.Thread(target=two_at_once) for _ in range(2)]
    started = time.perf_counter()
    for thread in pair:
        thread.start()
    for thread in pair:
        thread.join()
    parallel_ips = 2 * rounds / (time.perf_counter() - started)
    version, name = classifier.card.version, classifier.runtime
    del classifier
    gc.collect()
    return {"inference_ms": median(times), "parallel_images_per_s": parallel_ips,
            "preprocess_ms": preprocess_ms, "version": version, "runtime": name}  # fmt: skip


@dataclass(frozen=True)
class Sent:
    wall: float  # time.time() at the start: the clock of the node's database stamps
    perf: float  # time.perf_counter() at the start
    seconds: float  # until the sender was done (association released / storescu exited)


def storescu(paths: list[Path], port: int) -> Sent:
    env = {**os.environ, **ENV}
    wall, started = time.time(), time.perf_counter()
    done = subprocess.run(["storescu", "-aet", "BENCH", "-aec", "DICOMNODE", "-nh", "127.0.0.1",
                           str(port), *map(str, paths)], capture_output=True, text=True, env=env,
                          timeout=3600)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr[-2000:]}")
    return Sent(wall, started, time.perf_counter() - started)


def send_pynetdicom(path: Path, port: int) -> Sent:
    """One association from this process: BENCH → DICOMNODE, one presentation context (the
    file's SOP class and transfer syntax), the file sent as it is (not decoded), released.
    TCP_NODELAY is set on the socket as soon as it is connected, as storescu does with
    TCP_NODELAY=1. The clock starts just before the association request."""
    meta = pydicom.dcmread(path, stop_before_pixels=True)
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(str(meta.SOPClassUID), [str(meta.file_meta.TransferSyntaxUID)])
    nodelay: list[int] = []

    def set_nodelay(event: Any) -> None:
        sock = event.assoc.dul.socket.socket
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # stream the file's bytes, no dcmread
    try:
        wall, started = time.time(), time.perf_counter()
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMNODE",
                             evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)])  # fmt: skip
        if not assoc.is_established:
            raise RuntimeError("pynetdicom: no association with the node")
        try:
            status = assoc.send_c_store(path)
        finally:
            if assoc.is_established:
                assoc.release()
            else:
                assoc.abort()
        seconds = time.perf_counter() - started
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    code = int(status.Status) if status and "Status" in status else None
    if code != 0:
        raise RuntimeError(f"pynetdicom: the node answered {code!r} to the C-STORE")
    if nodelay != [1]:
        raise RuntimeError(f"pynetdicom: TCP_NODELAY not set on the sender socket ({nodelay})")
    return Sent(wall, started, seconds)


def lookup(orthanc: Orthanc, uid: str) -> bool:
    return bool(orthanc.post("/tools/lookup", content=uid.encode()))


def utc_epoch(text: str) -> float:
    """A timestamp of the node's database (UTC; naive as SQLite stores it, or aware) as
    seconds since the epoch, comparable with time.time()."""
    stamp = datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


class NodeDB:
    """The node's SQLite database, read-only, while the node writes it (WAL). Autocommit
    (isolation_level=None): every SELECT is its own read transaction, so each poll sees what
    the node committed before it."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)

    def close(self) -> None:
        self.conn.close()

    def delivered_at(self, sop_instance_uid: str) -> str | None:
        """When the result with this SOP instance UID was delivered (None: not yet). Raises
        if its delivery failed for good."""
        row = self.conn.execute(
            "SELECT d.state, d.delivered_at, d.last_error FROM result r "
            "JOIN delivery d ON d.result_id = r.id WHERE r.sop_instance_uid = ?",
            (sop_instance_uid,),
        ).fetchone()
        if row is None:
            return None
        state, delivered_at, error = row
        if str(state).lower() == "failed":
            raise RuntimeError(f"the node gave up delivering a result: {error}")
        return str(delivered_at) if delivered_at and str(state).lower() == "delivered" else None

    def wait_delivered(self, sop_instance_uid: str, what: str) -> str:
        """A gentle poll (every 25 ms, a local SQLite read) for the result's delivered_at."""
        stamp = wait_until(lambda: self.delivered_at(sop_instance_uid), timeout=600,
                           interval=0.025, what=f"{what} delivered (node database)")  # fmt: skip
        assert stamp is not None
        return stamp

    def job(self, sop_instance_uid: str) -> dict[str, str | None]:
        row = self.conn.execute(
            "SELECT received_at, started_at, finished_at FROM job WHERE sop_instance_uid = ?",
            (sop_instance_uid,),
        ).fetchone()
        names = ("received_at", "started_at", "finished_at")
        return dict(zip(names, row or (None,) * 3, strict=True))


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--per-study", type=int, default=10)
    parser.add_argument("--stable", type=float, default=2.0, help="study_stable_seconds")
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2, help="[model] workers")
    parser.add_argument("--threads", type=int, default=0, help="[model] threads (0: all cores)")
    parser.add_argument("--spinning", action="store_true",
                        help="[model] spinning = true (ONNX Runtime threads spin)")  # fmt: skip
    parser.add_argument("--sender", choices=SENDERS, default="pynetdicom",
                        help="single images: sent from this process (pynetdicom) or by one "
                             "storescu process each (start-up counted); the burst always "
                             "uses storescu")  # fmt: skip
    parser.add_argument("--timing", choices=TIMINGS, default="node-db",
                        help="when the SC/SR is stored: the node's delivery record "
                             "(node-db) or polling Orthanc every 10 ms (orthanc-poll)")  # fmt: skip
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    before = machine()
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    models = tmp / "node" / "var" / "models"  # the node's cache: exported once, here
    # Measured before the node starts and after it stops: the VM's speed drifts by minutes,
    # and the faster of the two (the stricter reference) is used.
    alone = inference_alone(args.runtime, models, rounds=10, spinning=args.spinning)
    print(f"inference alone, before: {alone}", file=sys.stderr)
    uids = OutputUIDs(root=NodeSettings().uid_root, model_version=str(alone["version"]))
    source = data.testdata(data.RG3_UNCR)
    result: dict[str, Any] = {"args": vars(args), "sender": args.sender,
                              "timing": TIMING_LABEL[args.timing],
                              "inference_alone": alone}  # fmt: skip
    # As shipped in orthanc/orthanc.json: 128 KiB PDUs instead of Orthanc's default 16 KiB.
    with Orthanc(tmp / "orthanc", extra={"MaximumPduLength": 131072}) as orthanc:
        config = write_node_config(
            tmp / "node", destinations=[orthanc_destination(orthanc)],
            node={"study_stable_seconds": args.stable},
            model={"demo_architecture": "efficientnet_b4", "runtime": args.runtime,
                   "max_batch": args.max_batch, "workers": args.workers,
                   "threads": args.threads, "spinning": args.spinning},
        )  # fmt: skip
        port = read_ports(config)[0]
        node = NodeProcess(config).start()
        try:
            node.wait_ready(timeout=600)
            assert node.pid is not None
            # one warm-up image (first-run allocations), then single images one at a time
            db = NodeDB(tmp / "node" / "var" / "dicomnode.db")
            singles: list[dict[str, Any]] = []
            try:
                for i in range(args.single + 1):
                    study = pydicom.uid.generate_uid()
                    path = data.copy_with_new_uids(source, tmp / "single" / f"{i}.dcm",
                                                   study_uid=study)  # fmt: skip
                    one = single_image(args, path, study, port, orthanc, uids, db)
                    if i:
                        singles.append(one)
            finally:
                db.close()
            result["single"] = singles
            result["burst"] = (burst(args, tmp, source, port, orthanc, uids, node.pid)
                               if args.burst > 0 else None)  # fmt: skip
            result["node_vmhwm_mb"] = rss_kb(node.pid, "VmHWM") / 1024
            result["node_timings"] = node_timings(tmp / "node" / "var" / "dicomnode.db")
            result["single_stages"] = single_stages(tmp / "node" / "var" / "dicomnode.db",
                                                    args.single)  # fmt: skip
        finally:
            node.stop()
    after_run = inference_alone(args.runtime, models, rounds=10, spinning=args.spinning)
    print(f"inference alone, after: {after_run}", file=sys.stderr)
    result["inference_alone_before_after"] = [alone, after_run]
    result["inference_alone"] = {
        **alone, "inference_ms": min(alone["inference_ms"], after_run["inference_ms"]),
        "parallel_images_per_s": max(alone["parallel_images_per_s"],
                                     after_run["parallel_images_per_s"]),
    }  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)  # a 500-image burst leaves ~8 GB behind
    after = machine()
    report(result, before, after, args)
    write_json("e2e", {"machine_before": before, "machine_after": after, **result}, args.out)


def single_image(args: Any, path: Path, study: str, port: int, orthanc: Orthanc,
                 uids: OutputUIDs, db: NodeDB) -> dict[str, Any]:  # fmt: skip
    """Send one image; seconds from the send start until its SC and its study's SR are stored
    in Orthanc, by `args.timing`, and the raw stamps behind them."""
    sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    sc_uid, sr_uid = uids.instance(SC, sop), uids.instance(SR, study)
    sent = send_pynetdicom(path, port) if args.sender == "pynetdicom" else storescu([path], port)
    if args.timing == "orthanc-poll":  # the former way: Orthanc polled every 10 ms
        wait_until(lambda: lookup(orthanc, sc_uid), timeout=600, interval=0.01,
                   what="SC in Orthanc")  # fmt: skip
        sc = time.perf_counter() - sent.perf
        wait_until(lambda: lookup(orthanc, sr_uid), timeout=600, interval=0.01,
                   what="SR in Orthanc")  # fmt: skip
        sr = time.perf_counter() - sent.perf
        stamps = db.job(sop)
    else:
        sc_at = db.wait_delivered(sc_uid, "SC")
        sr_at = db.wait_delivered(sr_uid, "SR")
        sc, sr = utc_epoch(sc_at) - sent.wall, utc_epoch(sr_at) - sent.wall
        stamps = {**db.job(sop), "sc_delivered_at": sc_at, "sr_delivered_at": sr_at}
        for uid, what in ((sc_uid, "SC"), (sr_uid, "SR")):  # the node's record, checked once
            if not lookup(orthanc, uid):
                raise RuntimeError(f"the node recorded the {what} as delivered, but Orthanc "
                                   "does not have it")  # fmt: skip
    return {"send_start_epoch": sent.wall, "send_s": sent.seconds, "sc_s": sc, "sr_s": sr,
            "sr_minus_stable_s": sr - sent.seconds - args.stable, "node": stamps}  # fmt: skip


def burst(args: Any, tmp: Path, source: Path, port: int, orthanc: Orthanc, uids: OutputUIDs,
          pid: int) -> dict[str, Any]:  # fmt: skip
    paths, scs, srs = [], [], []
    for i in range(args.burst):
        if i % args.per_study == 0:
            study = pydicom.uid.generate_uid()
            srs.append(uids.instance(SR, study))
        path = data.copy_with_new_uids(source, tmp / "burst" / f"{i:04d}.dcm", study_uid=study)
        paths.append(path)
        scs.append(uids.instance(SC, str(pydicom.dcmread(path, stop_before_pixels=True)
                                        .SOPInstanceUID)))  # fmt: skip
    baseline = int(orthanc.get("/statistics")["CountInstances"])
    peak_rss = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak_rss[0] = max(peak_rss[0], rss_kb(pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    orthanc_pid = orthanc._proc.pid if orthanc._proc else None
    cpu_before = cpu_seconds(pid, orthanc_pid)
    started = time.perf_counter()
    sent: list[Any] = []

    def send() -> None:
        try:
            sent.append(storescu(paths, port).seconds)
        except Exception as exc:  # reported by the waiting loop
            sent.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    count_at: list[tuple[float, int]] = []
    try:
        while True:  # SCs arrive first (reports wait for an empty queue and stable studies)
            stored = int(orthanc.get("/statistics")["CountInstances"]) - baseline
            count_at.append((time.perf_counter() - started, stored))
            if stored >= len(scs):
                break
            if sent and isinstance(sent[0], Exception):
                raise sent[0]
            if time.perf_counter() - started > 7200:
                raise TimeoutError("burst did not finish in 2 h")
            time.sleep(0.25)
        last_sc = time.perf_counter() - started
        cpu = {name: (after - cpu_before[name]) * 1000 / len(paths)
               for name, after in cpu_seconds(pid, orthanc_pid).items()}  # fmt: skip
        missing = [uid for uid in scs if not lookup(orthanc, uid)]
        wait_until(lambda: all(lookup(orthanc, uid) for uid in srs), timeout=1800,
                   interval=0.25, what="every SR of the burst")  # fmt: skip
        last_sr = time.perf_counter() - started
    finally:
        sender.join()
        done.set()
        sampler.join()
    return {"images": len(paths), "studies": len(srs), "send_s": sent[0] if sent else None,
            "last_sc_s": last_sc, "last_sr_s": last_sr, "sc_missing_at_count": len(missing),
            "images_per_s": len(paths) / last_sc, "peak_rss_sampled_mb": peak_rss[0] / 1024,
            "cpu_ms_per_image": cpu,
            "progress": count_at[:: max(1, len(count_at) // 50)]}  # fmt: skip


def cpu_seconds(node_pid: int, orthanc_pid: int | None) -> dict[str, float]:
    """CPU seconds (user + system) so far of the node, Orthanc, this process's finished
    children (the storescu sender) and the whole machine, busy and idle."""
    tick = os.sysconf("SC_CLK_TCK")

    def process(pid: int | None) -> float:
        if pid is None:
            return 0.0
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    times = os.times()
    machine_ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = (machine_ticks[3] + machine_ticks[4]) / tick  # idle + iowait
    return {"node": process(node_pid), "orthanc": process(orthanc_pid),
            "sender": times.children_user + times.children_system,
            "machine_busy": sum(machine_ticks[:8]) / tick - idle, "machine_idle": idle}  # fmt: skip


def node_timings(db: Path) -> dict[str, float]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT preprocess_ms, inference_ms FROM job WHERE state = "
                            "'CLASSIFIED'").fetchall()  # fmt: skip
    return {"jobs": len(rows), "preprocess_ms_median": median([r[0] for r in rows if r[0]]),
            "inference_ms_median": median([r[1] for r in rows if r[1]])}  # fmt: skip


def single_stages(db: Path, count: int) -> dict[str, float]:
    """Medians (ms) of where a single image's time goes inside the node, from its own
    timestamps: ack (job committed) → claimed → classified with its SC spooled → SC delivered.
    The first `count` + 1 jobs are the singles; the first (warm-up) is left out."""

    def ms(later: str | None, earlier: str | None) -> float | None:
        if not later or not earlier:
            return None
        delta = datetime.fromisoformat(later) - datetime.fromisoformat(earlier)
        return delta.total_seconds() * 1000

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT j.received_at, j.started_at, j.finished_at, d.delivered_at FROM job j "
            "JOIN result r ON r.job_id = j.id AND r.kind IN ('SC', 'sc') "
            "JOIN delivery d ON d.result_id = r.id ORDER BY j.id LIMIT ? OFFSET 1",
            (count,),
        ).fetchall()
    stages = {"queue_ms": (1, 0), "classify_and_sc_ms": (2, 1), "deliver_sc_ms": (3, 2)}
    return {name: median([v for r in rows if (v := ms(r[b], r[a])) is not None])
            for name, (b, a) in stages.items()}  # fmt: skip


def report(result: dict[str, Any], before: dict[str, Any], after: dict[str, Any],
           args: Any) -> None:  # fmt: skip
    alone = result["inference_alone"]
    singles = result["single"]
    sc = [s["sc_s"] * 1000 for s in singles]
    sr = [s["sr_minus_stable_s"] * 1000 for s in singles]
    b = result["burst"]
    inference_ips = 1000 / alone["inference_ms"]
    source = result["timing"]
    sender = {
        "pynetdicom": "pynetdicom from the benchmark process, association set-up to release",
        "storescu": "one storescu process, its start-up included",
    }[args.sender]
    rows = [
        {
            "measure": "inference alone, one image at a time (ms/image; the faster of before "
            "and after the node ran: "
            + " / ".join(f"{a['inference_ms']:.0f}" for a in result["inference_alone_before_after"])
            + ")",
            "value": alone["inference_ms"],
            "target": "-",
        },
        {
            "measure": "inference alone, two images at once, one core each (images/s)",
            "value": alone["parallel_images_per_s"],
            "target": "-",
        },
        {
            "measure": f"single image ({args.sender}) → SC stored in Orthanc ({source}), p50 (ms)",
            "value": median(sc),
            "target": f"≤ 3× inference = {3 * alone['inference_ms']:.0f}",
        },
        {
            "measure": f"single image ({args.sender}) → SC stored in Orthanc ({source}), p95 (ms)",
            "value": percentile(sc, 95),
            "target": "-",
        },
        {
            "measure": f"single image → SR in Orthanc ({source}) minus stability wait, p50 (ms)",
            "value": median(sr),
            "target": "-",
        },
        {
            "measure": f"single image → SR in Orthanc ({source}) minus stability wait, p95 (ms)",
            "value": percentile(sr, 95),
            "target": "-",
        },
        {"measure": "study stability wait (s, configured)", "value": args.stable, "target": "-"},
    ]
    if b is None:
        rows.append({"measure": "burst", "value": "skipped (--burst 0)", "target": "-"})
    else:
        rows += [
            {
                "measure": f"burst of {b['images']}: sustained images/s to the last SC",
                "value": b["images_per_s"],
                "target": f"≥ 60 % of {inference_ips:.1f} = {0.6 * inference_ips:.1f}",
            },
            {
                "measure": "burst: ratio to inference-alone images/s",
                "value": b["images_per_s"] / inference_ips,
                "target": "≥ 0.6",
            },
            {
                "measure": "burst: ratio to inference-alone images/s, two images at once",
                "value": b["images_per_s"] / alone["parallel_images_per_s"],
                "target": "-",
            },
            {"measure": "burst: ingest (storescu) seconds", "value": b["send_s"], "target": "-"},
            {
                "measure": "burst: last SR after the last SC (s)",
                "value": b["last_sr_s"] - b["last_sc_s"],
                "target": "-",
            },
            {
                "measure": "burst: CPU ms per image, node / Orthanc / storescu / machine "
                "busy / machine idle (to the last SC)",
                "value": " / ".join(
                    f"{b['cpu_ms_per_image'][k]:.0f}"
                    for k in ("node", "orthanc", "sender", "machine_busy", "machine_idle")
                ),
                "target": "-",
            },
        ]
    rows += [
        {"measure": "node peak RSS, VmHWM (MB)", "value": result["node_vmhwm_mb"],
         "target": "≤ 1536"},
        {"measure": "node preprocess / inference ms (median, from its DB)",
         "value": f"{result['node_timings']['preprocess_ms_median']:.0f} / "
                  f"{result['node_timings']['inference_ms_median']:.0f}", "target": "-"},
        {"measure": f"single image: send ({sender}), p50 (ms)",
         "value": median([s["send_s"] * 1000 for s in singles]), "target": "-"},
        {"measure": "single image in the node: ack → claimed / → SC spooled / → SC delivered "
                    "(ms, p50)",
         "value": " / ".join(f"{v:.0f}" for v in result["single_stages"].values()),
         "target": "-"},
    ]  # fmt: skip
    print(f"runtime {alone['runtime']}, single images sent with {args.sender}, stored time: "
          f"{source}, load before/after {before['load_average']} / "
          f"{after['load_average']}")  # fmt: skip
    print(table(rows, ["measure", "value", "target"]))


if __name__ == "__main__":
    try:
        main()
    except httpx.HTTPError as exc:
        sys.exit(f"Orthanc request failed: {exc}")
