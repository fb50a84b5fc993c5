"""dcmtk `storescu`, `echoscu` and `storescp` as test peers."""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Self

import pydicom

from dicomnode.checks import listening_sockets
from tests.support.procs import (
    LOCALHOST,
    dcmtk_env,
    free_port,
    log_tail,
    stop_process,
    wait_until,
)

UNCOMPRESSED_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
_STATUS_RE = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")
_SENDING_RE = re.compile(r"^I: Sending file: (.*)$")
# storescu logs at INFO except its own logger at DEBUG (which prints each response status);
# the progress dots are switched off.
_STORESCU_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.logger.dcmtk.apps.storescu = DEBUG
log4cplus.logger.dcmtk.apps.storescu.progress = OFF
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.logToStdErr = true
log4cplus.appender.console.ImmediateFlush = true
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %P: %m%n
"""


class StoreResult(subprocess.CompletedProcess[str]):
    """A storescu run, plus the DIMSE status of each file (None: no response for it).

    `returncode` is storescu's own; storescu continues after a failed store (`-nh`) and still
    exits 0, so check `ok` (every file answered with success or a warning) or `check()`.
    """

    def __init__(
        self,
        args: list[str],
        returncode: int,
        stdout: str,
        stderr: str,
        *,
        files: list[Path],
        statuses: list[int | None],
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.files = files
        self.statuses = statuses

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and all(
            s is not None and (s == 0 or s in (0x0001, 0x0107, 0x0116) or s >> 12 == 0xB)
            for s in self.statuses
        )

    def check(self) -> Self:
        """Raise AssertionError with storescu's log unless every file was stored."""
        if not self.ok:
            shown = [f"{f.name}: {_hex(s)}" for f, s in zip(self.files, self.statuses, strict=True)]
            raise AssertionError(
                f"storescu failed (exit {self.returncode}); statuses {shown}\n{self.stderr[-4000:]}"
            )
        return self


def _hex(status: int | None) -> str:
    return "no response" if status is None else f"0x{status:04X}"


def storescu(
    files: Iterable[str | Path],
    *,
    port: int,
    host: str = LOCALHOST,
    aet: str = "STORESCU",
    called: str = "DICOMNODE",
    propose: str | Sequence[str] = "auto",
    halt_on_error: bool = False,
    extra: Sequence[str] = (),
    timeout: float = 120.0,
) -> StoreResult:
    """Send `files` with dcmtk `storescu` in one association; never raises on DICOM failure.

    `propose`:
    - "auto" (default): read each file's SOP class and transfer syntax and propose exactly
      those (plus uncompressed) through a generated `-xf` configuration, so a mixed batch of
      JPEG 2000, JPEG, RLE, deflated and uncompressed files goes in one association unchanged;
    - "uncompressed": storescu's default (compressed files then fail: it cannot convert them);
    - a flag or list of flags, e.g. "-xv" (JPEG 2000 lossless), "-xw", "-xs", "-xy", "-xr", "-xd".
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise ValueError("storescu needs at least one file")
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(path)
    with tempfile.TemporaryDirectory(prefix="storescu-") as tmp:
        log_config = Path(tmp) / "log.cfg"
        log_config.write_text(_STORESCU_LOG_CONFIG)
        cmd = ["storescu", "-lc", str(log_config), "-aet", aet, "-aec", called]
        cmd += ["-to", str(int(timeout)), "-ta", "30", "-td", str(int(timeout))]
        if propose == "auto":
            cmd += ["-xf", str(_write_proposal(paths, Path(tmp) / "proposal.cfg")), "Auto"]
        elif propose != "uncompressed":
            cmd += [propose] if isinstance(propose, str) else list(propose)
        if not halt_on_error:
            cmd.append("-nh")
        cmd += [*extra, host, str(port), *map(str, paths)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout + 30, env=dcmtk_env()
        )
    return StoreResult(
        cmd,
        done.returncode,
        done.stdout,
        done.stderr,
        files=paths,
        statuses=_parse_statuses(done.stderr, paths),
    )


def _write_proposal(paths: Sequence[Path], target: Path) -> Path:
    """storescu association profile "Auto": each file's (SOP class, syntax) + uncompressed."""
    pairs: dict[tuple[str, str], None] = {}
    for path in paths:
        meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
        sop_class = meta.get("MediaStorageSOPClassUID")
        syntax = meta.get("TransferSyntaxUID")
        if not sop_class or not syntax:
            raise ValueError(f"{path}: no file meta information; pass propose= explicitly")
        pairs[(str(sop_class), str(syntax))] = None
    syntaxes = sorted({ts for _, ts in pairs if ts not in UNCOMPRESSED_SYNTAXES})
    names = {ts: f"TS{i}" for i, ts in enumerate(syntaxes, 1)}
    contexts = [f"{sop}\\{names[ts]}" for sop, ts in pairs if ts in names]
    contexts += [f"{sop}\\Uncompressed" for sop in dict.fromkeys(sop for sop, _ in pairs)]
    if len(contexts) > 128:
        raise ValueError("more than 128 presentation contexts; send in smaller batches")
    lines = ["[[TransferSyntaxes]]", "[Uncompressed]"]
    lines += [f"TransferSyntax{i} = {ts}" for i, ts in enumerate(UNCOMPRESSED_SYNTAXES, 1)]
    for ts, name in names.items():
        lines += [f"[{name}]", f"TransferSyntax1 = {ts}"]
    lines += ["[[PresentationContexts]]", "[Contexts]"]
    lines += [f"PresentationContext{i} = {c}" for i, c in enumerate(contexts, 1)]
    lines += ["[[Profiles]]", "[Auto]", "PresentationContexts = Contexts", ""]
    target.write_text("\n".join(lines))
    return target


def _parse_statuses(log: str, paths: Sequence[Path]) -> list[int | None]:
    """Map storescu's "Sending file" / "DIMSE Status" lines back to the input files."""
    statuses: list[int | None] = [None] * len(paths)
    sent = [False] * len(paths)
    current: int | None = None
    for line in log.splitlines():
        if match := _SENDING_RE.match(line):
            name = match.group(1)
            current = next((i for i, p in enumerate(paths) if not sent[i] and str(p) == name), None)
            if current is not None:
                sent[current] = True
        elif (match := _STATUS_RE.search(line)) and current is not None:
            statuses[current] = int(match.group(1), 16)
            current = None
    return statuses


def echoscu(
    *,
    port: int,
    host: str = LOCALHOST,
    aet: str = "ECHOSCU",
    called: str = "ANY-SCP",
    extra: Sequence[str] = (),
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO with dcmtk `echoscu`; returncode 0 means the peer answered success."""
    cmd = ["echoscu", "-aet", aet, "-aec", called, "-to", str(int(timeout))]
    cmd += ["-ta", str(int(timeout)), "-td", str(int(timeout)), *extra, host, str(port)]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout + 30, env=dcmtk_env()
    )


class StoreSCP:
    """dcmtk `storescp` receiving into `output_dir`, accepting every syntax dcmtk knows (+xa).

    Files are written in the syntax received (compressed data stays compressed), named by
    modality and SOP Instance UID. dcmtk 3.6.7 cannot answer a chosen error status; for
    failure behaviour pass `extra=("--refuse",)`, `("--abort-after",)`, `("--abort-during",)`
    or `("--sleep-during", "5")`, or use `StatusSCP`. `stop()`/`start()` keep the port.
    """

    def __init__(
        self,
        workdir: str | Path,
        *,
        aet: str = "STORESCP",
        extra: Sequence[str] = (),
        start_timeout: float = 15.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.output_dir = self.workdir / "received"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.aet = aet
        self.port = free_port()
        self.extra = tuple(extra)
        self.start_timeout = start_timeout
        self.log_path = self.workdir / "storescp.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, extra: Sequence[str] | None = None) -> Self:
        """Start listening (optionally with other `extra` flags) and wait for a C-ECHO."""
        if self.running:
            raise RuntimeError("storescp is already running")
        if extra is not None:
            self.extra = tuple(extra)
        cmd = ["storescp", "-v", "+xa", "-pm", "-aet", self.aet, "-od", str(self.output_dir)]
        cmd += [*self.extra, str(self.port)]
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dcmtk_env(),
                start_new_session=True,
            )
        if "--refuse" in self.extra:
            ready: Callable[[], bool] = self._listening
        else:
            ready = self._echoes
        try:
            wait_until(ready, timeout=self.start_timeout, what=f"storescp on port {self.port}")
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"storescp did not start: {exc}\n{log_tail(self.log_path)}") from exc
        return self

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"storescp exited with code {self._proc.returncode}")

    def _echoes(self) -> bool:
        self._check_alive()
        return echoscu(port=self.port, called=self.aet, timeout=2).returncode == 0

    def _listening(self) -> bool:
        """The port is in LISTEN state (/proc/net/tcp), found without connecting: a probe
        connection is an association to a refusing storescp, whose failed reject of it
        ("DUL Finite State Machine Error") was followed once by no answer to the next one."""
        self._check_alive()
        return bool(listening_sockets(self.port))

    def stop(self, timeout: float = 10.0) -> int | None:
        if self._proc is None:
            return None
        code = stop_process(self._proc, timeout=timeout)
        self._proc = None
        return code

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def files(self) -> list[Path]:
        """Received files, sorted by name."""
        return sorted(p for p in self.output_dir.iterdir() if p.is_file())

    def datasets(self) -> list[pydicom.Dataset]:
        return [pydicom.dcmread(p) for p in self.files()]

    def wait_for_files(self, count: int, *, timeout: float = 30.0) -> list[Path]:
        """Wait until at least `count` files were received; returns them."""

        def enough() -> list[Path]:
            found = self.files()
            return found if len(found) >= count else []

        return wait_until(enough, timeout=timeout, what=f"{count} file(s) received by storescp")
