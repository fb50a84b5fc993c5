"""The composition root: the only place that starts threads and servers (the process around
it, signals and the exit, is `dicomnode serve` in cli.py)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import structlog
import uvicorn
from sqlalchemy.exc import SQLAlchemyError

from dicomnode.audit import Audit, AuditAction, AuditEventID
from dicomnode.checks import (
    StartupError,
    check_disk_free,
    check_schema,
    check_spool_writable,
    require_free_ports,
)
from dicomnode.config import NO_DESTINATION_WARNING, Settings
from dicomnode.deliver.outbox import deliver_due
from dicomnode.http.app import create_app
from dicomnode.http.context import ApiContext
from dicomnode.http.upload_audit import upload_expired_recorder
from dicomnode.ingest.admission import StoreContext
from dicomnode.ingest.scp import start_scp
from dicomnode.ingest.tls import describe_receiving
from dicomnode.logconfig import set_salt
from dicomnode.metrics import Metrics
from dicomnode.model.cache import clean_model_cache, mark_used
from dicomnode.model.card import ModelPackageError
from dicomnode.model.classifier import Classifier, load_classifier
from dicomnode.model.evidence import log_warnings
from dicomnode.pacs.orthanc import api_from_settings
from dicomnode.pacs.outcome import OutcomeRecorder
from dicomnode.pacs.pull import OrthancPull
from dicomnode.retention.orthanc import OrthancResultSeries
from dicomnode.retention.policy import RetentionPolicy
from dicomnode.retention.run import (
    RetentionBusy,
    RetentionScheduler,
    finish_interrupted,
    run_retention,
)
from dicomnode.retention.store import SqlRetentionStore
from dicomnode.store.db import SchemaError, make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from dicomnode.store.tables import utcnow
from dicomnode.uids import hash_uid, node_salt
from dicomnode.uploads.store import UPLOADS_DIR, UploadStore
from dicomnode.work.pipeline import Pipeline
from dicomnode.work.worker import JobWorker, Loop

log = structlog.stdlib.get_logger("dicomnode.node")

#: How often expired HTTP uploads are looked for (each upload also looks).
UPLOADS_CLEANUP_SECONDS = 600.0


def node_identity(settings: Settings) -> str:
    """The id this node holds leases under in a shared database: configured, or derived from
    what tells two nodes apart on one host and stays the same across restarts."""
    node = settings.node
    return node.node_id or f"{node.ae_title}@{socket.gethostname()}:{node.port}"


class Node:
    def __init__(self, settings: Settings, *, classifier: Classifier | None = None) -> None:
        self.settings = settings
        self.owner = node_identity(settings)
        self.metrics = Metrics()
        self._classifier = classifier
        self.classifier: Classifier | None = None
        self.scp: Any = None
        self.loops: list[Loop] = []
        self.orthanc_pull: OrthancPull | None = None
        self.api_server: uvicorn.Server | None = None
        self._api_thread: threading.Thread | None = None
        self.started = False
        self.stopped = threading.Event()
        self.stopping = threading.Event()
        self.audit: Audit | None = None
        self.retention_scheduler: RetentionScheduler | None = None
        self.deadline: float | None = None

    # --- start ------------------------------------------------------------------------------

    def start(self) -> None:
        """Check, then start everything, step by step in this order. Raises StartupError with a
        clear message; a step that fails first stops what the steps before it started."""
        try:
            require_free_ports(self.settings)  # a clash is said at once, not after the model
            self._open_store()
            self._load_model()
            self._start_workers()
            self._start_scp()
            self._start_api()
            self._start_retention()
        except BaseException:
            try:  # stop what the steps before started; the caller sees the original error
                self.stop()
            except Exception:
                log.exception("stopping after a failed start-up failed")
            raise
        self.started = True
        assert self.audit is not None and self.classifier is not None
        s = self.settings
        self.audit.record(event=AuditEventID.APPLICATION_ACTIVITY, action=AuditAction.EXECUTE,
                          actor=s.node.ae_title, detail="node started")  # fmt: skip
        log.info(
            "node started",
            ae_title=s.node.ae_title,
            dicom_port=self.dicom_port,
            dicom_ports=self.scp.ports(),  # {"plaintext": …, "tls": …}: node.port, node.tls_port
            api_port=s.api.port,
            model=self.classifier.card.display_name,
            runtime=self.classifier.runtime,
            destinations=[d.name for d in s.destinations],
            retention_next_run=str(self.retention_scheduler.next_run_time)
            if self.retention_scheduler
            else None,
        )
        if not s.destinations:
            log.warning(NO_DESTINATION_WARNING)

    def _open_store(self) -> None:
        """The spool and the database: checked, opened, and left as a restart needs them
        (this node's unfinished jobs requeued, an interrupted retention run finished)."""
        s = self.settings
        spool_check = check_spool_writable(s.spool_dir)
        if not spool_check.ok:
            raise StartupError(spool_check.line())
        salt = node_salt(s.node.data_dir, s.node.log_salt)
        set_salt(salt)  # the PHI filter must hash with the salt the node's own fields use
        if salt != s.node.log_salt:
            node = s.node.model_copy(update={"log_salt": salt})
            self.settings = s = s.model_copy(update={"node": node})
        s.spool_dir.mkdir(parents=True, exist_ok=True)
        disk = check_disk_free(s.spool_dir, s.node.min_free_mb)
        if not disk.ok:
            log.warning("start-up check: disk space low", check=disk.message)
        try:
            self.engine = make_engine(s.database_url, upgrade=s.database.auto_upgrade)
        except SchemaError as exc:
            raise StartupError(f"[FAIL] database: {exc}") from None
        except SQLAlchemyError as exc:
            raise StartupError(f"[FAIL] database: unreachable ({type(exc).__name__})") from None
        schema = check_schema(self.engine)
        if not schema.ok:
            raise StartupError(schema.line())
        self.jobs = Jobs(self.engine)
        self.audit = Audit(self.engine, salt=salt)
        self.spool = Spool(s.spool_dir, min_free_mb=s.node.min_free_mb,
                           tmp_tag=hash_uid(self.owner, "spool-tmp")[:12])  # fmt: skip
        requeued = self.jobs.release_owned(self.owner)
        if requeued:
            log.info("unfinished jobs requeued after restart", count=requeued)
        log.info("node identity", node_id=self.owner, spool=str(s.spool_dir))
        self._finish_interrupted_retention()

    def _load_model(self) -> None:
        """The classifier given to the node, else the configured package (or the demo)."""
        s = self.settings
        try:
            self.classifier = self._classifier or load_classifier(
                s.model.package or None,
                device=s.model.device,
                demo_architecture=s.model.demo_architecture,
                runtime=s.model.runtime,
                cache_dir=s.node.data_dir / "models",
                threads=s.model.threads,
                spinning=s.model.spinning,
                parallel=s.model.workers > 1,
            )
        except (ModelPackageError, OSError, ValueError, RuntimeError, KeyError) as exc:
            where = f"model.package = {s.model.package!r}" if s.model.package else "demo model"
            raise StartupError(f"[FAIL] model: {where} cannot be loaded ({exc})") from None
        log_warnings(self.classifier.card, log)  # the demo; small validation sets, wide CIs

    def _start_workers(self) -> None:
        """The loops: workers, outbox, lease heartbeat, upload expiry and Orthanc's. They run
        before the SCP listens, so the first instance received is worked at once."""
        s = self.settings
        assert self.audit is not None and self.classifier is not None
        pipeline = Pipeline(settings=s, jobs=self.jobs, spool=self.spool,
                            classifier=self.classifier, metrics=self.metrics,
                            on_result=lambda: self.outbox_loop.wake.set())  # fmt: skip
        lease = s.database.lease_seconds
        worker = JobWorker(jobs=self.jobs, pipeline=pipeline, owner=self.owner,
                           stable_seconds=s.node.study_stable_seconds,
                           lease_seconds=lease, max_batch=s.model.max_batch)  # fmt: skip
        # Several loops share one JobWorker: claims are atomic in the database (as between
        # nodes), the classifier and pipeline are safe to call from several threads.
        self.worker_loops = [
            Loop(f"worker-{n}", worker.step, idle=0.5) for n in range(1, s.model.workers + 1)
        ]
        self.worker_loop = self.worker_loops[0]
        worker.stopping = self.worker_loop.stopping.is_set

        def wake_workers() -> None:
            for loop in self.worker_loops:
                loop.wake.set()

        self.store_ctx = StoreContext(
            spool=self.spool, jobs=self.jobs, metrics=self.metrics, salt=s.node.log_salt,
            on_received=wake_workers, audit=self.audit,
            max_dataset_bytes=s.node.max_dataset_bytes,
        )  # fmt: skip
        on_delivered = self._start_orthanc(self.store_ctx)
        self.outbox_loop = Loop(
            "outbox",
            lambda: deliver_due(jobs=self.jobs, spool=self.spool, settings=s,
                                metrics=self.metrics, owner=self.owner,
                                on_delivered=on_delivered, audit=self.audit) > 0,
            idle=1.0,
        )  # fmt: skip
        # Heartbeat: renew this node's leases well before they expire.
        self.lease_loop = Loop(
            "leases",
            lambda: self.jobs.renew_leases(owner=self.owner, lease_seconds=lease) < 0,
            idle=lease / 3,
        )
        self.uploads_loop = Loop("uploads", self._uploads_expiry(), idle=UPLOADS_CLEANUP_SECONDS)
        self.loops += [*self.worker_loops, self.outbox_loop, self.lease_loop, self.uploads_loop]
        for loop in self.loops:
            loop.start()

    def _uploads_expiry(self) -> Callable[[], bool]:
        """The uploads loop's step: HTTP analysis results (issue 10) past their retention."""
        s = self.settings
        uploads = UploadStore(s.node.data_dir / UPLOADS_DIR)
        expired = upload_expired_recorder(self.audit,
                                          retention_hours=s.api.upload_retention_hours)  # fmt: skip

        def expire_uploads() -> bool:
            uploads.remove_expired(retention_hours=s.api.upload_retention_hours,
                                   on_removed=expired)  # fmt: skip
            return False  # idle until the next check

        return expire_uploads

    def _start_scp(self) -> None:
        s = self.settings
        try:
            self.scp = start_scp(s.node, self.store_ctx)
        except OSError as exc:  # a port in use, an unreadable certificate or key (ssl.SSLError)
            raise StartupError(f"[FAIL] DICOM SCP: cannot listen ({describe_receiving(s.node)}): "
                               f"{type(exc).__name__}: {exc}") from None  # fmt: skip

    def _start_orthanc(self, store_ctx: StoreContext) -> Any:
        """Orthanc integration (dicomnode.pacs.orthanc): outcome recording and the pull path, each
        worked by its own loop. Returns the outbox hook (or None)."""
        s = self.settings
        if not s.orthanc.url:
            return None
        api = api_from_settings(s)
        hook = None
        if s.orthanc.record_outcome and s.orthanc.destination:
            recorder = OutcomeRecorder(settings=s, jobs=self.jobs, api=api,
                                       card=lambda: self.classifier.card if self.classifier
                                       else None)  # fmt: skip
            loop = Loop("orthanc-outcome", recorder.step, idle=1.0)
            recorder.wake = loop.wake.set
            self.loops.append(loop)
            hook = recorder.on_delivered
        if s.orthanc.pull:
            self.orthanc_pull = OrthancPull(settings=s, store=store_ctx, api=api)
            loop = Loop("orthanc-pull", self.orthanc_pull.step, idle=1.0)
            self.orthanc_pull.wake = loop.wake.set
            self.loops.append(loop)
        return hook

    # --- retention --------------------------------------------------------------------------

    def _orthanc(self) -> OrthancResultSeries | None:
        return OrthancResultSeries.from_settings(self.settings)

    def _finish_interrupted_retention(self) -> None:
        """Deletions a killed run marked are finished before anything else touches the spool."""
        assert self.audit is not None
        store = SqlRetentionStore(self.engine, self.spool)
        try:
            finish_interrupted(store=store, files=self.spool, audit=self.audit)
        except RetentionBusy:
            log.info("a retention run is in progress elsewhere; it finishes its own deletions")

    def _run_retention(self) -> None:
        """One scheduled run (APScheduler's thread)."""
        structlog.contextvars.clear_contextvars()
        assert self.audit is not None
        s = self.settings
        store = SqlRetentionStore(self.engine, self.spool)
        try:
            run_retention(store=store, files=self.spool, audit=self.audit,
                          policy=RetentionPolicy.from_settings(s), now=utcnow(),
                          uid_root=s.node.uid_root, orthanc=self._orthanc(),
                          stop=self.stopping)  # fmt: skip
        except RetentionBusy:
            log.info("retention run skipped: another run holds the lock")
        except (SQLAlchemyError, OSError) as exc:
            log.error("retention run failed; the next run continues", error=type(exc).__name__)
        self._clean_model_cache()

    def _clean_model_cache(self) -> None:
        """Remove prepared models not used for retention.model_cache_days, never this node's."""
        days = self.settings.retention.model_cache_days
        if days <= 0:
            return
        keep = self.classifier.cache_files if self.classifier is not None else ()
        mark_used(keep)  # in use as long as the node runs, however long since it loaded it
        clean_model_cache(self.settings.node.data_dir / "models", days=days, keep=keep,
                          now=utcnow())  # fmt: skip

    def _start_retention(self) -> None:
        r = self.settings.retention
        if not r.enabled:
            return
        self._clean_model_cache()  # the model is loaded: what it uses is marked and kept
        self.retention_scheduler = RetentionScheduler(schedule=r.schedule, run=self._run_retention)
        self.retention_scheduler.start()

    def _start_api(self) -> None:
        s = self.settings
        if s.api.port == 0:
            return
        ctx = ApiContext(settings=s, jobs=self.jobs, metrics=self.metrics,
                         card=lambda: self.classifier.card if self.classifier else None,
                         readiness=self.readiness, spool=self.spool, audit=self.audit,
                         classifier=self.classifier, store=self.store_ctx,
                         orthanc_pull=self.orthanc_pull.request if self.orthanc_pull
                         else None)  # fmt: skip
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
            "scp_listening": self.scp is not None and not self.stopping.is_set(),
        }
        try:
            self.jobs.ping()
            checks["database"] = True
        except Exception:  # any failure here means "not ready"; the reason is in the logs
            log.warning("readiness: database unreachable")
            checks["database"] = False
        probe = self.spool.tmp / f".probe-{self.spool.tmp_prefix}{os.getpid()}"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
            checks["spool_writable"] = True
        except OSError:
            checks["spool_writable"] = False
        checks["loops_alive"] = all(loop.is_alive() for loop in self.loops)
        return checks

    # --- stop -------------------------------------------------------------------------------

    def stop(self, *, grace: float | None = None) -> None:
        """Stop accepting associations, finish (or requeue) the job in hand, record the outbox
        state and the audit counts, all within `grace` seconds (node.shutdown_grace_seconds)."""
        grace = self.settings.node.shutdown_grace_seconds if grace is None else grace
        started = time.monotonic()
        self.deadline = deadline = started + grace

        def left(reserve: float = 0.0) -> float:
            return max(0.0, deadline - time.monotonic() - reserve)

        self.stopping.set()  # readiness fails; a retention run stops after its batch
        if self.retention_scheduler is not None:
            self.retention_scheduler.shutdown()
        if self.scp is not None:
            self.scp.shutdown()  # no new associations
            _drain_associations(self.scp, timeout=min(5.0, left() * 0.25))
        for loop in self.loops:
            loop.stopping.set()
            loop.wake.set()
        for loop in self.loops:
            loop.join(timeout=left(reserve=min(2.0, grace * 0.2)))
        stuck = [loop.name for loop in self.loops if loop.is_alive()]
        if stuck:
            log.warning("grace period over: work in hand is requeued", loops=stuck)
        requeued = self.jobs.release_owned(self.owner) if hasattr(self, "jobs") else 0
        if self.audit is not None:
            self.audit.flush_all()
        if self.audit is not None and self.started:
            self.audit.record(event=AuditEventID.APPLICATION_ACTIVITY, action=AuditAction.EXECUTE,
                              actor=self.settings.node.ae_title, detail="node stopped")  # fmt: skip
        if self.api_server is not None:
            self.api_server.should_exit = True
            if self._api_thread is not None:
                self._api_thread.join(timeout=min(5.0, left()))
        if hasattr(self, "engine"):
            self.engine.dispose()
        self.stopped.set()
        log.info("node stopped", requeued=requeued, seconds=round(time.monotonic() - started, 2))


def _drain_associations(server: Any, *, timeout: float) -> None:
    """Let associations in progress end by themselves for `timeout` seconds, then abort them
    (an instance not yet acknowledged stays with its sender, which sends it again)."""
    end = time.monotonic() + timeout
    while server.active_associations and time.monotonic() < end:
        time.sleep(0.05)
    for assoc in server.active_associations:
        assoc.abort()
