"""Process and polling helpers shared by the real-peer harness (no fixed sleeps)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

LOCALHOST = "127.0.0.1"

T = TypeVar("T")

_handed_out_ports: set[int] = set()
_port_lock = threading.Lock()


def free_port() -> int:
    """A loopback TCP port that is free now and not handed out before by this process.

    The kernel may give the same ephemeral port twice in a row once it is closed, so ports
    already returned are remembered; two servers of one test never get the same port.
    """
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((LOCALHOST, 0))
                port = int(s.getsockname()[1])
            if port not in _handed_out_ports:
                _handed_out_ports.add(port)
                return port
    raise RuntimeError("no free TCP port found")


class WaitTimeout(AssertionError):
    """`wait_until` gave up; the message says what was awaited and what was seen last."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns a truthy value, and return that value.

    Exceptions listed in `ignore` count as "not yet" (e.g. `httpx.TransportError` while a
    server starts); any other exception propagates at once. After `timeout` seconds raise
    `WaitTimeout` naming `what`, with the last value or exception seen.
    """
    deadline = time.monotonic() + timeout
    last: str = "predicate never ran"
    while True:
        try:
            value = predicate()
        except ignore as exc:
            last = f"last error: {exc!r}"
        else:
            if value:
                return value
            last = f"last value: {value!r}"
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} ({last})")
        time.sleep(interval)


def log_tail(path: Path | None, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it does not exist."""
    if path is None or not path.exists():
        return f"(no log at {path})"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL the whole session. Returns the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            proc.wait(timeout=10)
    return int(proc.returncode)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and anything it started (it runs in its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def dcmtk_env() -> dict[str, str]:
    # dcmtk only disables Nagle when asked; without it each object stalls ~40-90 ms.
    return {**os.environ, "TCP_NODELAY": "1"}
