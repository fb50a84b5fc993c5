"""Start-up checks, shared by the node (refuses to start on a failure) and `dicomnode doctor`.

Each check says in one line what is wrong and what to do about it; none prints a password,
a patient attribute or a UID.
"""

from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

from dicomnode.config import NO_DESTINATION_WARNING, Settings
from dicomnode.destinations import DicomwebDestination
from dicomnode.durable import atomic_write
from dicomnode.store import migrations  # noqa: F401  (registers every table on SQLModel.metadata)

Status = Literal["ok", "warn", "fail"]


class StartupError(RuntimeError):
    """A start-up check failed; the message says which and why."""


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str

    @property
    def ok(self) -> bool:
        return self.status != "fail"

    def line(self) -> str:
        return f"[{self.status.upper():4}] {self.name}: {self.message}"


def spool_root(settings: Settings) -> Path:
    return settings.spool_dir


def check_spool_writable(root: Path) -> Check:
    """Create the spool and write, fsync and remove a probe file in it."""
    probe = root / "tmp" / f".doctor-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(probe, prefix=".doctor-") as fh:  # the spool's own way of writing
            fh.write(b"probe")
        probe.unlink()
    except OSError as exc:
        return Check(
            "spool writable",
            "fail",
            f"cannot write in {root} ({exc.strerror or type(exc).__name__}): fix the "
            "permissions or node.data_dir",
        )
    return Check("spool writable", "ok", str(root))


def check_disk_free(root: Path, min_free_mb: int) -> Check:
    try:
        free_mb = shutil.disk_usage(root if root.exists() else root.parent).free // 2**20
    except OSError as exc:
        return Check("disk free", "fail", f"cannot read free space of {root} ({exc.strerror})")
    if free_mb < min_free_mb:
        return Check(
            "disk free",
            "fail",
            f"{free_mb} MiB free, below node.min_free_mb = {min_free_mb}: C-STORE "
            "answers 0xA700 (out of resources) until space is freed",
        )
    return Check("disk free", "ok", f"{free_mb} MiB free (node.min_free_mb = {min_free_mb})")


def _display_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ValueError, SQLAlchemyError):
        return "(unparsable database URL)"


def check_database(url: str) -> tuple[Check, Engine | None]:
    """Connect without creating anything; an SQLite file that does not exist yet is a warning
    (the node creates it at first start)."""
    shown = _display_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).exists():
            return Check(
                "database",
                "warn",
                f"{shown} does not exist yet; the node creates it at first start",
            ), None
    try:
        engine = create_engine(url, pool_pre_ping=True)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return Check("database", "fail", f"{shown} unreachable ({_reason(exc)})"), None
    return Check("database", "ok", f"{shown} reachable"), engine


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text_ = str(orig or exc).splitlines()[0] if str(orig or exc) else type(exc).__name__
    return f"{type(orig or exc).__name__}: {text_[:200]}"


def check_schema(engine: Engine) -> Check:
    """Every table and column this version uses exists (else: run the migrations)."""
    try:
        inspector = inspect(engine)
        present = set(inspector.get_table_names())
        problems = []
        for name, table in SQLModel.metadata.tables.items():
            if name not in present:
                problems.append(f"table {name} missing")
                continue
            columns = {c["name"] for c in inspector.get_columns(name)}
            missing = [c.name for c in table.columns if c.name not in columns]
            if missing:
                problems.append(f"table {name} lacks {', '.join(missing)}")
    except SQLAlchemyError as exc:
        return Check("database schema", "fail", f"cannot inspect ({_reason(exc)})")
    if problems:
        return Check(
            "database schema",
            "fail",
            "; ".join(problems) + " (start the node once or apply the migrations)",
        )
    return Check("database schema", "ok", f"{len(SQLModel.metadata.tables)} tables present")


def check_model(settings: Settings) -> Check:
    from dicomnode.model.card import ModelPackageError
    from dicomnode.model.classifier import load_classifier
    from dicomnode.model.evidence import messages

    m = settings.model
    models = settings.data_dir / "models"
    cache: Path | None = models
    try:
        models.mkdir(parents=True, exist_ok=True)
    except OSError:  # reported by the spool check; check the model without the cache
        cache = None
    try:
        # As the node loads it: same runtime, same cache, the same check against PyTorch.
        classifier = load_classifier(
            m.package or None, device=m.device, demo_architecture=m.demo_architecture,
            runtime=m.runtime, cache_dir=cache, threads=m.threads, spinning=m.spinning,
            parallel=m.workers > 1,
        )  # fmt: skip
    except (ModelPackageError, OSError, ValueError, RuntimeError, KeyError) as exc:
        where = f"model.package = {m.package!r}" if m.package else "the demo model"
        return Check(
            "model", "fail", f"{where} cannot be loaded ({type(exc).__name__}: {str(exc)[:200]})"
        )
    card = classifier.card
    measured = ""
    if classifier.selection is not None:  # runtime = "auto": what was measured on this host
        from dicomnode.model.select import summary_line

        measured = f"; {summary_line(classifier.selection)}"
    if not card.trained:
        return Check(
            "model",
            "warn",
            f"{card.display_name} loaded ({classifier.runtime}): no model.package, results "
            f"are not meaningful; untrained demo: no validation evidence{measured}",
        )
    weak = messages(card)  # a warning, not a failure: the site decides (docs/model-card.md)
    if weak:
        return Check("model", "warn", f"{card.display_name} loaded ({classifier.runtime}); "
                     f"weak validation evidence: {' | '.join(weak)}{measured}")  # fmt: skip
    return Check("model", "ok", f"{card.display_name} loaded ({classifier.runtime}){measured}")


def check_destinations(settings: Settings) -> list[Check]:
    from dicomnode.deliver.scu import AssociationFailed, client_tls_context, echo

    checks = []
    for d in settings.destinations:
        name = f"destination {d.name}"
        if isinstance(d, DicomwebDestination):
            from dicomnode.deliver.stow import probe

            ok, seen = probe(d, timeout=5)
            checks.append(Check(name, "ok" if ok else "warn", f"STOW-RS to {d.url}: {seen}"))
            continue
        try:
            status = echo(
                host=d.host,
                port=d.port,
                called_ae_title=d.ae_title,
                calling_ae_title=settings.node.ae_title,
                timeout=5,
                # As the outbox sends to it: a TLS-only peer refuses a plaintext C-ECHO.
                tls=client_tls_context(settings.node) if d.tls else None,
            )
        except (AssociationFailed, OSError) as exc:
            checks.append(
                Check(
                    name,
                    "warn",
                    f"C-ECHO to {d.ae_title}@{d.host}:{d.port} "
                    f"failed ({exc}); results wait in the outbox",
                )
            )
            continue
        status_text = f"0x{status:04X}"
        checks.append(
            Check(
                name,
                "ok" if status == 0 else "warn",
                f"C-ECHO to {d.ae_title}@{d.host}:{d.port}: {status_text}",
            )
        )
    return checks


def check_destination_configured(settings: Settings) -> Check:
    """Results go nowhere without a destination: said, not passed over as "all checks passed"."""
    if not settings.destinations:
        return Check("destinations", "warn", NO_DESTINATION_WARNING)
    names = ", ".join(d.name for d in settings.destinations)
    return Check("destinations", "ok", f"results are sent to {names}")


def check_port_free(*, what: str, host: str, port: int) -> Check:
    """Bind `host:port` as the server will (SO_REUSEADDR, so a closing connection's TIME_WAIT
    does not count) and let go at once: a clash is reported before the slow start-up steps."""
    try:
        with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        holder = port_holder(port)
        held = f", held by {holder}" if holder else ""
        return Check(what, "fail", f"cannot listen on {host}:{port} "
                     f"({exc.strerror or type(exc).__name__}{held}): stop that program or "
                     "choose another port")  # fmt: skip
    return Check(what, "ok", f"{host}:{port} free")


def check_listening_ports(settings: Settings) -> list[Check]:
    """Every port the node will listen on. Probed, then let go: the SCP and the API bind them
    a moment later (a port taken in between still fails there, with its own message)."""
    from dicomnode.ingest.tls import listeners

    s = settings
    ports = []
    for listener in listeners(s.node):
        key = "tls_port" if listener.tls and listener.port == s.node.tls_port else "port"
        ports.append((f"DICOM port (node.{key})", s.node.host, listener.port))
    if s.api.port:
        ports.append(("HTTP port (api.port)", s.api.host, s.api.port))
    return [check_port_free(what=what, host=host, port=port) for what, host, port in ports]


def require_free_ports(settings: Settings) -> None:
    """The node's first start-up step: raises StartupError naming a port in use (and, where it
    can be told, the process holding it) before the slow steps (the model) begin."""
    for check in check_listening_ports(settings):
        if not check.ok:
            raise StartupError(check.line())


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def listening_sockets(port: int) -> set[str]:
    """The sockets ("socket:[inode]") listening on TCP `port` of this host, IPv4 or IPv6, from
    Linux's /proc/net/tcp*; empty where nothing listens or /proc cannot tell."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()  # local_address is "HEXIP:HEXPORT"; state 0A is LISTEN
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1][-4:], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def port_holder(port: int) -> str | None:
    """The process listening on TCP `port`, from Linux's /proc ("pid 123 (orthanc …)"); None
    where that cannot be told (another user's process, another container, another OS)."""
    inodes = listening_sockets(port)
    for proc in Path("/proc").iterdir() if inodes else ():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").strip()
                return f"pid {proc.name} ({command.decode(errors='replace')[:120]})"
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return None


def check_tls_receiving(settings: Settings) -> Check:
    """What receiving requires (ports, TLS, client certificates), with the certificate, key and
    client CA loaded as the SCP loads them."""
    from dicomnode.ingest.tls import describe_receiving, server_tls_context

    node = settings.node
    what = describe_receiving(node)
    try:
        server_tls_context(node)
    except OSError as exc:  # ssl.SSLError included
        return Check("receiving", "fail", f"{what}; the TLS certificate, key or CA cannot be "
                     f"loaded ({type(exc).__name__}: {str(exc)[:200]})")  # fmt: skip
    if node.tls_certificate and node.tls_client_ca_certificate and not node.tls_verify_clients:
        return Check("receiving", "warn", f"{what}; node.tls_client_ca_certificate is not used "
                     "while node.tls_verify_clients = false")  # fmt: skip
    return Check("receiving", "ok", what)


def check_overlay_language(settings: Settings) -> Check:
    """`[outputs] language` needs a font with its letters (DejaVu Sans: Debian's
    fonts-dejavu-core); without one the overlay falls back to English."""
    from dicomnode.objects.sc import drawable_language

    wanted = settings.outputs.language
    drawn = drawable_language(wanted)
    if drawn != wanted:
        return Check("overlay text", "warn", f"outputs.language = {wanted!r} but no font with "
                     "its letters was found (install fonts-dejavu-core): the overlay is drawn "
                     "in English")  # fmt: skip
    return Check("overlay text", "ok", f"drawn in {wanted!r}")


def doctor(settings: Settings) -> list[Check]:
    """Everything an administrator wants to know before (or while) the node runs."""
    root = spool_root(settings)
    checks = [check_spool_writable(root), check_disk_free(root, settings.node.min_free_mb)]
    database, engine = check_database(settings.database_url)
    checks.append(database)
    if engine is not None:
        checks.append(check_schema(engine))
        engine.dispose()
    checks.append(check_model(settings))
    checks.append(check_tls_receiving(settings))
    checks.append(check_destination_configured(settings))
    checks.append(check_overlay_language(settings))
    checks += check_destinations(settings)
    return checks
