"""Command line: `dicomnode serve | classify | echo`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicomnode.card import ModelPackageError
from dicomnode.config import ConfigError, Settings, load_settings


def _settings(path: str | None) -> Settings:
    return load_settings(path)


def cmd_serve(args: argparse.Namespace) -> int:
    from dicomnode.logconfig import configure_logging
    from dicomnode.node import Node

    settings = _settings(args.config)
    configure_logging(level=args.log_level, salt=settings.node.log_salt)
    Node(settings).run_forever(grace=args.grace)
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from dicomnode.classifier import load_classifier
    from dicomnode.logconfig import configure_logging
    from dicomnode.offline import classify_files, json_lines

    settings = _settings(args.config)
    configure_logging(level="WARNING", json=True, stream=sys.stderr)
    package = args.model if args.model is not None else (settings.model.package or None)
    classifier = load_classifier(
        package or None, device=args.device or settings.model.device,
        demo_architecture=args.demo_architecture or settings.model.demo_architecture,
        runtime=settings.model.runtime, cache_dir=settings.data_dir / "models",
        threads=settings.model.threads,
    )  # fmt: skip
    if not classifier.card.trained:
        print("warning: no model package given: using the UNTRAINED DEMO model; its results "
              "are not meaningful", file=sys.stderr)  # fmt: skip
    out = Path(args.out) if args.out else None
    results = classify_files(
        [Path(f) for f in args.files], classifier=classifier,
        uid_root=settings.node.uid_root, out_dir=out,
    )  # fmt: skip
    for line in json_lines(results, classifier):
        print(line, flush=True)
    return 0 if all(r.state != "failed" for r in results) else 1


def cmd_echo(args: argparse.Namespace) -> int:
    from dicomnode.scu import AssociationFailed, echo

    try:
        status = echo(host=args.host, port=args.port, called_ae_title=args.aet,
                      calling_ae_title=args.calling_aet, timeout=args.timeout)  # fmt: skip
    except AssociationFailed as exc:
        print(f"C-ECHO to {args.aet}@{args.host}:{args.port} failed: {exc}", file=sys.stderr)
        return 2
    print(f"C-ECHO to {args.aet}@{args.host}:{args.port}: status 0x{status:04X}")
    return 0 if status == 0 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomnode", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the node (SCP, worker, outbox, API)")
    serve.add_argument("--config", default=None, help="TOML file (default: built-in defaults)")
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument("--grace", type=float, default=30.0,
                       help="seconds to finish the job in hand on SIGTERM")  # fmt: skip
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
    echo.set_defaults(func=cmd_echo)
    return parser


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
