"""Command line: `dicomnode serve | classify | echo | retention | audit export | doctor`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicomnode import __version__
from dicomnode.config import ConfigError, Settings, load_settings
from dicomnode.model.card import ModelPackageError

if TYPE_CHECKING:
    from dicomnode.node import Node


def _settings(path: str | None) -> Settings:
    return load_settings(path)


def cmd_serve(args: argparse.Namespace) -> int:
    from dicomnode.checks import StartupError
    from dicomnode.logconfig import configure_logging, get_logger
    from dicomnode.node import Node

    settings = _settings(args.config)
    configure_logging(level=args.log_level, salt=settings.node.log_salt)
    try:
        _run_until_signalled(Node(settings), grace=args.grace)
    except StartupError as exc:
        get_logger("dicomnode.node").error("start-up check failed", check=str(exc))
        print(f"dicomnode: start-up check failed: {exc}", file=sys.stderr)
        return 3
    exit_now(0)  # stopped cleanly, everything is on disk: skip the slow interpreter teardown
    return 0


def _run_until_signalled(node: Node, *, grace: float | None) -> None:
    """Start the node, run until SIGTERM or SIGINT, stop it within `grace`; a second signal
    exits at once."""
    from dicomnode.logconfig import get_logger

    log = get_logger("dicomnode.node")
    stop = threading.Event()

    def _signal(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second signal: exiting now", signal=signal.Signals(signum).name)
            exit_now(1)
        log.info("signal received; stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    node.start()
    stop.wait()
    node.stop(grace=grace)
    _join_until(node.deadline)


def _join_until(deadline: float | None) -> None:
    """Threads we do not start ourselves (an executor's worker in a long call) get until the
    deadline; the caller then ends the process with `exit_now` whatever they are doing."""
    from dicomnode.logconfig import get_logger

    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is main or thread.daemon:
            continue
        thread.join(timeout=max(0.0, (deadline or 0) - time.monotonic()))
    others = [t for t in threading.enumerate() if t is not main and not t.daemon]
    busy = [t.name for t in others if t.is_alive()]
    if busy:
        get_logger("dicomnode.node").warning(
            "threads still busy at the end of the grace period; exiting", threads=busy
        )


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown. Call only once everything is on
    disk: tearing down torch's module graph alone takes seconds (more on a busy machine) and
    would push the exit past the grace period."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_classify(args: argparse.Namespace) -> int:
    from dicomnode.logconfig import configure_logging
    from dicomnode.model.classifier import load_classifier
    from dicomnode.uploads.offline import classify_files, json_lines

    settings = _settings(args.config)
    configure_logging(level="WARNING", json=True, stream=sys.stderr)
    package = args.model if args.model is not None else (settings.model.package or None)
    classifier = load_classifier(
        package or None, device=args.device or settings.model.device,
        demo_architecture=args.demo_architecture or settings.model.demo_architecture,
        runtime=settings.model.runtime, cache_dir=settings.data_dir / "models",
        threads=settings.model.threads, spinning=settings.model.spinning,
    )  # fmt: skip
    if not classifier.card.trained:
        print("warning: no model package given: using the UNTRAINED DEMO model; its results "
              "are not meaningful", file=sys.stderr)  # fmt: skip
    out = Path(args.out) if args.out else None
    results = classify_files(
        [Path(f) for f in args.files], classifier=classifier,
        uid_root=settings.node.uid_root, out_dir=out, language=settings.outputs.language,
        max_dataset_bytes=settings.node.max_dataset_bytes,
    )  # fmt: skip
    for line in json_lines(results, classifier):
        print(line, flush=True)
    return 0 if all(r.state != "failed" for r in results) else 1


def cmd_echo(args: argparse.Namespace) -> int:
    from dicomnode.deliver.scu import AssociationFailed, client_tls_context, echo

    tls = client_tls_context(_settings(args.config).node) if args.tls else None
    try:
        status = echo(host=args.host, port=args.port, called_ae_title=args.aet,
                      calling_ae_title=args.calling_aet, timeout=args.timeout,
                      tls=tls)  # fmt: skip
    except (AssociationFailed, OSError) as exc:
        print(f"C-ECHO to {args.aet}@{args.host}:{args.port} failed: {exc}", file=sys.stderr)
        return 2
    print(f"C-ECHO to {args.aet}@{args.host}:{args.port}: status 0x{status:04X}")
    return 0 if status == 0 else 1


def cmd_db(args: argparse.Namespace) -> int:
    """`db upgrade` migrates (under a lock: safe while other nodes run or start); `db current`
    prints the revision and exits 1 when an upgrade is needed."""
    from dicomnode.store.db import create_db_engine, head_revision, schema_revision, upgrade_schema

    engine = create_db_engine(_settings(args.config).database_url)
    try:
        if args.action == "upgrade":
            before, after = upgrade_schema(engine)
            print(f"database schema: {before or '(empty)'} -> {after}")
            return 0
        current, head = schema_revision(engine), head_revision()
        print(f"database schema: {current or '(empty)'} (newest: {head})")
        return 0 if current == head else 1
    finally:
        engine.dispose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dicomnode {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node (SCP, worker, outbox, API)")
    serve.add_argument("--config", default=None, help="TOML file (default: built-in defaults)")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--grace", type=float, default=None,
                       help="seconds to finish the job in hand on SIGTERM "
                            "(default: node.shutdown_grace_seconds)")  # fmt: skip
    serve.set_defaults(func=cmd_serve)

    classify = sub.add_parser("classify", help="classify DICOM files offline (JSON lines)")
    classify.add_argument("files", nargs="+")
    classify.add_argument("--out", help="write the SR and SC objects to this folder")
    classify.add_argument("--model", help="model package folder (default: config or demo)")
    classify.add_argument("--config", default=None)
    classify.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"])
    classify.add_argument("--demo-architecture", default=None, help=argparse.SUPPRESS)
    classify.set_defaults(func=cmd_classify)

    echo = sub.add_parser("echo", help="C-ECHO a DICOM peer")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=int, required=True)
    echo.add_argument("--aet", default="DICOMNODE", help="called AE title")
    echo.add_argument("--calling-aet", default="ECHOSCU")
    echo.add_argument("--timeout", type=float, default=10.0)
    echo.add_argument("--tls", action="store_true",
                      help="over TLS, with the node's certificates from --config")  # fmt: skip
    echo.add_argument("--config", default=None)
    echo.set_defaults(func=cmd_echo)

    db = sub.add_parser("db", help="database schema: apply or show migrations")
    db.add_argument("action", choices=["upgrade", "current"],
                    help="upgrade: migrate to the newest schema; current: show it")  # fmt: skip
    db.add_argument("--config", default=None)
    db.set_defaults(func=cmd_db)

    retention = sub.add_parser("retention", help="delete what the retention policy expired")
    retention.add_argument("--config", default=None)
    retention.add_argument("--dry-run", action="store_true", help="only print what would go")
    retention.add_argument("--now", type=_iso_time, default=None,
                           help="pretend it is this ISO 8601 time (default: now)")  # fmt: skip
    retention.set_defaults(func=cmd_retention)

    audit = sub.add_parser("audit", help="the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_sub.add_parser("export", help="print audit events as JSON lines")
    export.add_argument("--config", default=None)
    export.add_argument("--since", type=_iso_time, default=None, help="ISO 8601 time")
    export.add_argument("--until", type=_iso_time, default=None, help="ISO 8601 time")
    export.set_defaults(func=cmd_audit_export)

    doctor = sub.add_parser("doctor", help="check spool, disk, database, model, destinations")
    doctor.add_argument("--config", default=None)
    doctor.set_defaults(func=cmd_doctor)
    return parser


def _iso_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _open_store(settings: Settings) -> tuple[Any, Any, Any]:
    """Engine, spool and audit of a configured node, for the maintenance commands."""
    from dicomnode.audit import Audit
    from dicomnode.store.db import make_engine
    from dicomnode.store.spool import Spool
    from dicomnode.uids import node_salt

    data = settings.node.data_dir
    salt = node_salt(data, settings.node.log_salt)
    engine = make_engine(settings.database_url)
    spool = Spool(settings.spool_dir, min_free_mb=settings.node.min_free_mb)
    return engine, spool, Audit(engine, salt=salt)


def cmd_retention(args: argparse.Namespace) -> int:
    from dicomnode.logconfig import configure_logging
    from dicomnode.retention.orthanc import OrthancResultSeries
    from dicomnode.retention.policy import RetentionPolicy
    from dicomnode.retention.run import RetentionBusy, describe, run_retention
    from dicomnode.retention.store import SqlRetentionStore

    settings = _settings(args.config)
    configure_logging(level="INFO", json=True, stream=sys.stderr, salt=settings.node.log_salt)
    engine, spool, audit = _open_store(settings)
    try:
        report = run_retention(
            store=SqlRetentionStore(engine, spool), files=spool, audit=audit,
            policy=RetentionPolicy.from_settings(settings),
            now=args.now or datetime.now(UTC), uid_root=settings.node.uid_root,
            dry_run=args.dry_run,
            orthanc=OrthancResultSeries.from_settings(settings),
        )  # fmt: skip
    except RetentionBusy as exc:
        print(f"dicomnode: {exc}", file=sys.stderr)
        return 1
    for line in describe(report, hash_uid=audit.hash):
        print(line, flush=True)
    return 1 if report.errors else 0


def cmd_audit_export(args: argparse.Namespace) -> int:
    from dicomnode.audit import AuditAction, AuditEventID

    settings = _settings(args.config)
    _, _, audit = _open_store(settings)
    count = 0
    for event in audit.export(since=args.since, until=args.until):
        print(json.dumps(event), flush=False)
        count += 1
    sys.stdout.flush()
    audit.record(event=AuditEventID.AUDIT_LOG_USED, action=AuditAction.READ, actor="cli",
                 count=count, detail="dicomnode audit export")  # fmt: skip
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from dicomnode.checks import doctor
    from dicomnode.logconfig import configure_logging

    settings = _settings(args.config)
    configure_logging(level="WARNING", json=True, stream=sys.stderr, salt=settings.node.log_salt)
    print(f"configuration: {args.config or '(built-in defaults)'} is valid")
    checks = doctor(settings)
    for check in checks:
        print(check.line(), flush=True)
    failed = [c.name for c in checks if not c.ok]
    warned = [c.name for c in checks if c.status == "warn"]
    if failed:
        print(f"failed: {', '.join(failed)}")
    elif warned:  # exit 0, but not the "all passed" that hides them
        print(f"no check failed; read the warnings: {', '.join(warned)}")
    else:
        print("all checks passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"dicomnode: {exc}", file=sys.stderr)
        return 2
    except ModelPackageError as exc:  # includes a runtime that fails its check against PyTorch
        print(f"dicomnode: model: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
