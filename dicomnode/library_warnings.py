"""Library warnings (pydicom, highdicom, Pillow, Python's `warnings`) summarised, not streamed.

pydicom warns once per odd byte it meets: one 64-byte text element full of unknown escape
sequences gives 21 warnings each time it is decoded, and a node decodes a header several times
(receipt, classification, the report). A sender could fill the disk through the log with a few
hostile files (44,210 lines from 330 fuzzed files were measured). So:

- While one dataset is handled (`summarised`: the C-STORE handler, a job, a study report, an
  upload), library warnings are counted, not written; at the end one line says how many there
  were and of which kinds (the first words of each message, quoted values withheld).
- Outside such a scope, `LibraryWarningFilter` lets at most `burst` library records through per
  `window_seconds`; the number it held back is written in one line when the next window
  opens (with its first library record).

Records of the node's own loggers, and library records of level ERROR or above outside a
scope, are never held back by the counting (errors still go through the rate limit).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: Loggers whose records are library noise (`py.warnings`: Python warnings, via captureWarnings).
LIBRARY_LOGGERS = ("py.warnings", "pydicom", "highdicom", "PIL", "pylibjpeg", "openjpeg")
#: Kinds named in a summary line (the most frequent first).
KINDS_SHOWN = 5
_KIND_WORDS = 8

_summary_log = logging.getLogger("dicomnode.library_warnings")


def is_library_record(record: logging.LogRecord) -> bool:
    name = record.name
    return any(name == lib or name.startswith(lib + ".") for lib in LIBRARY_LOGGERS)


_QUOTED_OR_NUMBER = re.compile(r"'[^']*'|\"[^\"]*\"|b'[^']*'|\d+(?:\.\d+)*")


def kind_of(record: logging.LogRecord) -> str:
    """A PHI-free name for what a record is about: its first words, values withheld.

    Python warnings arrive as `path:line: Category: message`; the path is dropped."""
    try:
        message = record.getMessage()
    except Exception:  # a library's broken format string: still counted
        message = str(record.msg)
    if record.name == "py.warnings":
        head, _, rest = message.partition(": ")
        message = rest.split("\n", 1)[0] if rest else head
    words = _QUOTED_OR_NUMBER.sub("…", message).split()
    return " ".join(words[:_KIND_WORDS])[:120]


class _Tally:
    def __init__(self) -> None:
        self.count = 0
        self.kinds: Counter[str] = Counter()

    def add(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.kinds[kind_of(record)] += 1


_current: contextvars.ContextVar[_Tally | None] = contextvars.ContextVar(
    "dicomnode_library_warnings", default=None
)


def summarised(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate the handling of one dataset: its library warnings become one summary line
    (logged with the caller's bound context, e.g. its job id). Nested scopes count into the
    outermost one."""

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if _current.get() is not None:
                return function(*args, **kwargs)
            tally = _Tally()
            token = _current.set(tally)
            try:
                return function(*args, **kwargs)
            finally:
                _current.reset(token)
                if tally.count:
                    _summary_log.warning(
                        "library warnings while handling a %s: %d (%s)",
                        what,
                        tally.count,
                        "; ".join(f"{n}× {k}" for k, n in tally.kinds.most_common(KINDS_SHOWN)),
                    )

        return wrapper

    return decorate


class LibraryWarningFilter(logging.Filter):
    """Handler filter: library records inside a `summarised` scope are counted there; outside
    one, at most `burst` pass per `window_seconds`; the rest are counted, and reported in one
    line together with the first library record of a later window."""

    def __init__(self, *, burst: int = 20, window_seconds: float = 60.0) -> None:
        super().__init__()
        self.burst = burst
        self.window_seconds = window_seconds
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._passed = 0
        self._held = 0
        self._held_kinds: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not is_library_record(record):
            return True
        tally = _current.get()
        if tally is not None:
            tally.add(record)
            return False
        held: tuple[int, Counter[str]] | None = None
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= self.window_seconds:
                if self._held:
                    held = (self._held, self._held_kinds)
                self._window_start, self._passed, self._held = now, 0, 0
                self._held_kinds = Counter()
            if self._passed < self.burst:
                self._passed += 1
                allowed = True
            else:
                self._held += 1
                self._held_kinds[kind_of(record)] += 1
                allowed = False
        if held is not None:
            _report_held(*held, window=self.window_seconds)
        return allowed


def _report_held(count: int, kinds: Counter[str], *, window: float) -> None:
    _summary_log.warning(
        "library warnings held back (more than the burst allowed in %.0f s): %d (%s)",
        window,
        count,
        "; ".join(f"{n}× {k}" for k, n in kinds.most_common(KINDS_SHOWN)),
    )


def install(handler: logging.Handler, **limits: Any) -> LibraryWarningFilter:
    """Put one `LibraryWarningFilter` on `handler` (replacing an earlier one)."""
    for existing in list(handler.filters):
        if isinstance(existing, LibraryWarningFilter):
            handler.removeFilter(existing)
    limiter = LibraryWarningFilter(**limits)
    handler.addFilter(limiter)
    return limiter
