"""Ingest: the node's SCP against dcmtk `storescp`, same files, same `storescu` sender.

    PYTHONPATH=. .venv/bin/python benchmarks/ingest.py [--small 300] [--large 40] [--rounds 3]

Receivers (each on an ephemeral loopback port, TCP_NODELAY on both ends):
- dcmtk `storescp` writing files (no fsync: dcmtk has no option for it);
- a bare pynetdicom SCP writing the received bytes (no fsync, no database): the floor the
  library sets;
- the node's SCP (`dicomnode.ingest.scp`: durable spool write with fsync of file and directory, job
  row committed in SQLite WAL synchronous=FULL, then 0x0000), with no worker running.
Images: "small" = pydicom's CT_small (39 KB), "large" = pydicom-data RG3_UNCR (6.2 MB CR),
each copied with new UIDs. One `storescu` association per run sends all files; a round runs
each receiver once per size, rounds interleave receivers so background load hits them alike.
The figure is the median over rounds; the ratio is node / storescp from the same rounds.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import machine, median, table, write_json
from tests.support import data
from tests.support.procs import free_port, wait_until

ENV = {**os.environ, "TCP_NODELAY": "1"}


def make_files(source: Path, directory: Path, count: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(source)
    study = pydicom.uid.generate_uid()
    paths = []
    for i in range(count):
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = study
        path = directory / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(directory: Path, port: int, called: str) -> float:
    """Seconds for one storescu association sending every file in `directory`."""
    cmd = ["storescu", "-aet", "BENCH", "-aec", called, "+sd", "-nh", "127.0.0.1", str(port),
           str(directory)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=900)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or ("Status" in done.stderr and "Success" not in done.stderr):
        raise RuntimeError(f"storescu failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed


class Storescp:
    name = "dcmtk storescp"

    def __init__(self, workdir: Path) -> None:
        self.out = workdir / "storescp"
        self.out.mkdir(parents=True)
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["storescp", "-aet", "STORESCP", "-od", str(self.out), str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
        )  # fmt: skip
        self.called = "STORESCP"
        wait_until(lambda: _echo(self.port, self.called), timeout=15, what="storescp")

    def reset(self) -> None:
        shutil.rmtree(self.out)
        self.out.mkdir()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class BarePynetdicom:
    """pynetdicom writing the received bytes (encoded_dataset) to a file: the library floor."""

    name = "bare pynetdicom"

    def __init__(self, workdir: Path, *, max_pdu: int) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt

        from dicomnode.ingest.connections import handle_open

        self.out = workdir / "bare"
        self.out.mkdir(parents=True)
        ae = AE(ae_title="BARE")
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae.add_supported_context(Verification)
        ae.maximum_pdu_size = max_pdu
        self.counter = 0
        self.lock = threading.Lock()

        def on_store(event: Any) -> int:
            with self.lock:
                self.counter += 1
                n = self.counter
            (self.out / f"{n}.dcm").write_bytes(event.encoded_dataset())
            return 0

        self.port = free_port()
        self.called = "BARE"
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, handle_open)])  # fmt: skip

    def reset(self) -> None:
        shutil.rmtree(self.out)
        self.out.mkdir()

    def stop(self) -> None:
        self.server.shutdown()


class NodeScp:
    """The node's SCP with its real store path (spool + SQLite), no worker."""

    name = "node SCP (durable)"

    def __init__(self, workdir: Path, *, max_pdu: int) -> None:
        from dicomnode.config import Settings
        from dicomnode.ingest.admission import StoreContext
        from dicomnode.ingest.scp import start_scp
        from dicomnode.metrics import Metrics
        from dicomnode.store.db import make_engine
        from dicomnode.store.jobs import Jobs
        from dicomnode.store.spool import Spool

        self.workdir = workdir / "node"
        self.port = free_port()
        self.called = "DICOMNODE"
        settings = Settings.model_validate(
            {
                "node": {
                    "port": self.port,
                    "data_dir": str(self.workdir),
                    "max_pdu_size": max_pdu,
                    "min_free_mb": 0,
                }
            }
        )
        self.engine = make_engine(settings.database_url)
        self.jobs = Jobs(self.engine)
        ctx = StoreContext(spool=Spool(self.workdir / "spool"), jobs=self.jobs,
                           metrics=Metrics(), salt="bench")  # fmt: skip
        self.server = start_scp(settings.node, ctx)

    def reset(self) -> None:
        pass  # new UIDs every run, so nothing collides

    def stop(self) -> None:
        self.server.shutdown()
        self.engine.dispose()


def _echo(port: int, called: str) -> bool:
    done = subprocess.run(["echoscu", "-aec", called, "127.0.0.1", str(port)],
                          capture_output=True, env=ENV)  # fmt: skip
    return done.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=300, help="small images per run")
    parser.add_argument("--large", type=int, default=40, help="large images per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--max-pdu",
        type=int,
        default=None,
        help="PDU size the pynetdicom receivers offer (default: the node's)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from dicomnode.config import NodeSettings
    from dicomnode.logconfig import configure_logging

    configure_logging(level="WARNING", json=True, stream=sys.stderr)
    max_pdu = args.max_pdu if args.max_pdu is not None else NodeSettings().max_pdu_size
    before = machine()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        sets = {
            "small": make_files(data.ct_small(), root / "small", args.small),
            "large": make_files(data.testdata(data.RG3_UNCR), root / "large", args.large),
        }
        sizes = {k: sum(p.stat().st_size for p in v) for k, v in sets.items()}
        receivers: list[Any] = []
        factories: list[Callable[[], Any]] = [
            lambda: Storescp(root / "r"),
            lambda: BarePynetdicom(root / "r", max_pdu=max_pdu),
            lambda: NodeScp(root / "r", max_pdu=max_pdu),
        ]
        seconds: dict[tuple[str, str], list[float]] = {}
        for make in factories:
            receivers.append(make())
        try:
            for _ in range(args.rounds):
                for size, paths in sets.items():
                    for receiver in receivers:
                        receiver.reset()
                        # storescu reads a directory: copy so new UIDs per node run
                        run_dir = root / "run" / size
                        if run_dir.exists():
                            shutil.rmtree(run_dir)
                        run_dir.mkdir(parents=True)
                        _fresh_copies(paths, run_dir)
                        elapsed = send(run_dir, receiver.port, receiver.called)
                        seconds.setdefault((receiver.name, size), []).append(elapsed)
        finally:
            for receiver in receivers:
                receiver.stop()
    after = machine()
    rows = []
    for (name, size), values in seconds.items():
        t = median(values)
        n = len(sets[size])
        rows.append({"receiver": name, "images": size, "n": n, "images/s": n / t,
                     "MB/s": sizes[size] / 1e6 / t, "runs (s)": " ".join(f"{v:.2f}"
                                                                     for v in values)})  # fmt: skip
    for size in sets:
        ref = next(r for r in rows if r["receiver"] == "dcmtk storescp" and r["images"] == size)
        for r in rows:
            if r["images"] == size:
                r["ratio vs storescp"] = r["images/s"] / ref["images/s"]
    print(f"max PDU offered by the pynetdicom receivers: {max_pdu}; load before/after "
          f"{before['load_average']} / {after['load_average']}")  # fmt: skip
    print(table(rows, ["receiver", "images", "n", "images/s", "MB/s", "ratio vs storescp",
                       "runs (s)"]))  # fmt: skip
    write_json("ingest", {"machine_before": before, "machine_after": after, "max_pdu": max_pdu,
                          "rows": rows}, args.out)  # fmt: skip


def _fresh_copies(paths: list[Path], directory: Path) -> None:
    """Copies of `paths` with new SOP Instance UIDs (patched in place of the old ones)."""
    for path in paths:
        raw = path.read_bytes()
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        old = str(ds.SOPInstanceUID).encode()
        digits = "".join(random.choice("0123456789") for _ in range(len(old) - 6))
        new = f"2.25.1{digits}".encode()  # same length: the file's lengths stay valid
        (directory / path.name).write_bytes(raw.replace(old, new))


if __name__ == "__main__":
    main()
