"""The composition root: the only place that starts threads and servers."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from dicomnode.api import ApiContext, create_app
from dicomnode.classifier import Classifier, load_classifier
from dicomnode.config import Settings
from dicomnode.db import make_engine
from dicomnode.jobs import Jobs
from dicomnode.metrics import Metrics
from dicomnode.outbox import deliver_due
from dicomnode.pipeline import Pipeline
from dicomnode.scp import StoreContext, start_scp
from dicomnode.spool import Spool
from dicomnode.worker import JobWorker, Loop

log = structlog.stdlib.get_logger("dicomnode.node")


def node_salt(data_dir: Path, configured: str) -> str:
    """The salt for hashed identifiers in logs: configured, or made once and kept on disk."""
    if configured:
        return configured
    path = data_dir / "log-salt"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


class Node:
    def __init__(self, settings: Settings, *, classifier: Classifier | None = None) -> None:
        self.settings = settings
        self.owner = f"{settings.node.ae_title}@{socket.gethostname()}"
        self.metrics = Metrics()
        self._classifier = classifier
        self.classifier: Classifier | None = None
        self.scp: Any = None
        self.loops: list[Loop] = []
        self.api_server: uvicorn.Server | None = None
        self._api_thread: threading.Thread | None = None
        self.stopped = threading.Event()

    # --- start ------------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        data = s.node.data_dir
        data.mkdir(parents=True, exist_ok=True)
        salt = node_salt(data, s.node.log_salt)
        if salt != s.node.log_salt:
            node = s.node.model_copy(update={"log_salt": salt})
            self.settings = s = s.model_copy(update={"node": node})
        self.engine = make_engine(s.database_url)
        self.jobs = Jobs(self.engine)
        self.spool = Spool(data / "spool", min_free_mb=s.node.min_free_mb)
        requeued = self.jobs.release_owned(self.owner)
        if requeued:
            log.info("unfinished jobs requeued after restart", count=requeued)
        if s.model.threads:
            import torch

            torch.set_num_threads(s.model.threads)
        self.classifier = self._classifier or load_classifier(
            s.model.package or None,
            device=s.model.device,
            demo_architecture=s.model.demo_architecture,
        )
        card = self.classifier.card
        if not card.trained:
            log.warning("running the UNTRAINED DEMO model: results are not meaningful",
                        model=card.display_name)  # fmt: skip
        pipeline = Pipeline(settings=s, jobs=self.jobs, spool=self.spool,
                            classifier=self.classifier, metrics=self.metrics)  # fmt: skip
        worker = JobWorker(jobs=self.jobs, pipeline=pipeline, owner=self.owner,
                           stable_seconds=s.node.study_stable_seconds)  # fmt: skip
        self.worker_loop = Loop("worker", worker.step, idle=0.5)
        self.outbox_loop = Loop(
            "outbox",
            lambda: deliver_due(jobs=self.jobs, spool=self.spool, settings=s,
                                metrics=self.metrics) > 0,
            idle=1.0,
        )  # fmt: skip
        self.loops = [self.worker_loop, self.outbox_loop]
        for loop in self.loops:
            loop.start()
        store_ctx = StoreContext(spool=self.spool, jobs=self.jobs, metrics=self.metrics,
                                 salt=salt, on_received=self.worker_loop.wake.set,
                                 max_dataset_bytes=s.node.max_dataset_mb * 1024 * 1024)  # fmt: skip
        self.scp = start_scp(s.node, store_ctx)
        self._start_api()
        log.info(
            "node started",
            ae_title=s.node.ae_title,
            dicom_port=self.dicom_port,
            api_port=s.api.port,
            model=card.display_name,
            destinations=[d.name for d in s.destinations],
        )

    def _start_api(self) -> None:
        s = self.settings
        if s.api.port == 0:
            return
        ctx = ApiContext(settings=s, jobs=self.jobs, metrics=self.metrics,
                         card=lambda: self.classifier.card if self.classifier else None,
                         readiness=self.readiness)  # fmt: skip
        config = uvicorn.Config(create_app(ctx), host=s.api.host, port=s.api.port,
                                log_config=None, access_log=False, lifespan="off")  # fmt: skip
        self.api_server = uvicorn.Server(config)
        self._api_thread = threading.Thread(target=self.api_server.run, name="api", daemon=True)
        self._api_thread.start()

    @property
    def dicom_port(self) -> int:
        return int(self.scp.server_address[1]) if self.scp else 0

    def readiness(self) -> dict[str, bool]:
        checks = {
            "model_loaded": self.classifier is not None,
            "scp_listening": self.scp is not None,
        }
        try:
            self.jobs.ping()
            checks["database"] = True
        except Exception:  # any failure here means "not ready"; the reason is in the logs
            log.warning("readiness: database unreachable")
            checks["database"] = False
        probe = self.spool.tmp / f".probe-{os.getpid()}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            checks["spool_writable"] = True
        except OSError:
            checks["spool_writable"] = False
        checks["loops_alive"] = all(loop.is_alive() for loop in self.loops)
        return checks

    # --- stop -------------------------------------------------------------------------------

    def stop(self, *, grace: float = 30.0) -> None:
        """Stop accepting associations, let the job in hand finish, requeue the rest, exit."""
        if self.scp is not None:
            self.scp.shutdown()
        for loop in self.loops:
            loop.stop(timeout=grace)
        if hasattr(self, "jobs"):
            self.jobs.release_owned(self.owner)
        if self.api_server is not None:
            self.api_server.should_exit = True
            if self._api_thread is not None:
                self._api_thread.join(timeout=5)
        if hasattr(self, "engine"):
            self.engine.dispose()
        self.stopped.set()
        log.info("node stopped")

    def run_forever(self, *, grace: float = 30.0) -> None:
        stop = threading.Event()

        def _signal(signum: int, _frame: Any) -> None:
            log.info("signal received; stopping", signal=signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self.start()
        stop.wait()
        self.stop(grace=grace)
