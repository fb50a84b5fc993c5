"""Delivery faults: destinations that refuse, abort mid-transfer, hang, or are down.

Results are retried with backoff (a bounded number of attempts, never a hot loop), the failed
state is visible in the API, nothing is lost or duplicated (every peer ends with exactly the
node's result UIDs, the same ones on every retry) and all is delivered once the peers recover.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

from tests.reliability.helpers import db_rows, figures, small_cr, sop_uid
from tests.support.nodecfg import read_ports, write_node_config
from tests.support.peers import StatusSCP, StoreSCP, storescu, wait_until


class HangingPeer:
    """A TCP server that accepts connections and never says anything."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.port = port
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def stop(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()
        self._thread.join(timeout=5)


def _dest(name: str, aet: str, port: int) -> dict[str, object]:
    return {"name": name, "ae_title": aet, "host": "127.0.0.1", "port": port}


def _free_port() -> int:
    from tests.support.peers import free_port

    return free_port()


def test_failing_destinations_retry_with_backoff_and_deliver_once_they_recover(
    tmp_path: Path, node_factory
):
    refusing = StatusSCP(aet="REFUSE", status=0xA700).start()
    aborting = StoreSCP(tmp_path / "abort", aet="ABORT", extra=("--abort-after",)).start()
    hang_port, down_port = _free_port(), _free_port()
    hanging = HangingPeer(hang_port)
    recovered: list[StatusSCP] = []
    try:
        config = write_node_config(
            tmp_path / "node",
            destinations=[_dest("refuse", "REFUSE", refusing.port),
                          _dest("abort", "ABORT", aborting.port),
                          _dest("hang", "HANG", hang_port),
                          _dest("down", "DOWN", down_port)],
            delivery={"backoff_initial_seconds": 0.5, "backoff_max_seconds": 2,
                      "timeout_seconds": 2},
        )  # fmt: skip
        port = read_ports(config)[0]
        data_dir = tmp_path / "node" / "var"
        node = node_factory(config).wait_ready()
        image = small_cr(tmp_path / "in" / "a.dcm")
        assert storescu([image], port=port).statuses == [0x0000]
        study = str(__import__("pydicom").dcmread(image, stop_before_pixels=True)
                    .StudyInstanceUID)  # fmt: skip

        def api_study() -> dict:
            r = httpx.get(f"{node.api_url}/api/studies/{study}", timeout=10)
            r.raise_for_status()
            return r.json()

        def failing_everywhere() -> dict | None:
            data = api_study()
            deliveries = [d for r in data["results"] for d in r["deliveries"]]
            kinds = sorted(r["kind"] for r in data["results"])
            ok = (
                kinds in (["sc", "sr"], ["gsps", "sc", "sr"])  # a GSPS unless negative
                and len(deliveries) == 4 * len(kinds)
                and all(
                    d["state"] == "pending" and d["attempts"] >= 2 and d["last_error"]
                    for d in deliveries
                )
            )
            return data if ok else None

        started = time.monotonic()
        data = wait_until(failing_everywhere, timeout=180,
                          what="two failed attempts on every destination")  # fmt: skip
        by_dest = {d["destination"]: d for r in data["results"] for d in r["deliveries"]}
        assert by_dest["refuse"]["last_status"] == 0xA700
        assert "0xA700" in by_dest["refuse"]["last_error"]
        for name in ("hang", "down", "abort"):
            assert by_dest[name]["last_status"] in (None, 0), by_dest[name]
        # Backoff: attempts grow with 0.5 s, 1 s, 2 s, 2 s ... not at loop speed.
        elapsed = time.monotonic() - started
        attempts = max(a for (a,) in db_rows(data_dir, "select attempts from delivery"))
        assert attempts <= elapsed / 0.5 + 3, (attempts, elapsed)
        result_uids = {r["sop_instance_uid"] for r in data["results"]}

        # Recovery: every peer comes back (the hanging and the absent one as real SCPs).
        refusing.status = 0x0000
        aborting.stop()
        aborting.start(extra=())
        hanging.stop()
        for aet, p in (("HANG", hang_port), ("DOWN", down_port)):
            scp = StatusSCP(aet=aet)
            scp.port = p
            recovered.append(scp.start())

        def all_delivered() -> bool:
            data = api_study()
            return all(d["state"] == "delivered" for r in data["results"]
                       for d in r["deliveries"])  # fmt: skip

        wait_until(all_delivered, timeout=120, what="every result delivered after recovery")
        # Exactly the node's results at every peer: same UIDs, nothing extra.
        assert set(refusing.stored) == result_uids
        for scp in recovered:
            assert set(scp.stored) == result_uids
        abort_received = {sop_uid(p) for p in aborting.files()}
        assert abort_received == result_uids
        final = api_study()
        figures(
            "delivery faults",
            destinations=4, results=len(result_uids),
            attempts={d["destination"] + "/" + r["kind"]: d["attempts"]
                      for r in final["results"] for d in r["deliveries"]},
            refused_attempts=refusing.attempts, lost=0, duplicates_of_other_uids=0,
        )  # fmt: skip
    finally:
        refusing.stop()
        aborting.stop()
        hanging.stop()
        for scp in recovered:
            scp.stop()
