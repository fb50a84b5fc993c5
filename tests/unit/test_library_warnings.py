"""Library warnings: one summary line per dataset, a rate limit outside, nothing of the value.

The warnings are pydicom's own, provoked by decoding real hostile values, not logged by hand."""

from __future__ import annotations

import io
import json
import logging
import random
import threading
import warnings

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from dicomnode import library_warnings
from dicomnode.library_warnings import summarised
from dicomnode.logconfig import configure_logging

CANARY = b"CANARY"


def _hostile_text(rng: random.Random, length: int = 64) -> bytes:
    """A text value of unknown ISO 2022 escape sequences around a canary (pydicom warns once
    per sequence it cannot map)."""
    pieces = [CANARY]
    while sum(map(len, pieces)) < length:
        pieces.append(rng.choice([b"\x1b$Z", b"\x1b(Q", b"\x1b-X", b"\x1b$)Z", b"x"]))
    return b"".join(pieces)[:length]


def _decode_hostile(rng: random.Random) -> None:
    """Decode one dataset with hostile text as the node reads headers (pydicom warns, through
    its logger and through Python warnings, once per sequence it cannot map)."""
    ds = Dataset()
    ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    for tag, vr in ((0x00081030, "LO"), (0x00100010, "PN"), (0x00081090, "LO")):
        raw = _hostile_text(rng)
        ds[tag] = RawDataElement(Tag(tag), vr, len(raw), raw, 0, False, True)
    for element in ds:
        str(element.value)


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging(json=True, stream=out, salt="s")
    warnings.simplefilter("always")  # as a fresh process: every distinct warning shown
    yield out
    warnings.resetwarnings()


def _events(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_one_summary_line_per_dataset_whatever_pydicom_says(stream: io.StringIO) -> None:
    rng = random.Random(17)

    @summarised("received object")
    def handle() -> None:
        _decode_hostile(rng)

    for _ in range(30):
        handle()
    events = _events(stream)
    assert len(events) == 30, [e["event"] for e in events[:5]]
    assert all(e["logger"] == "dicomnode.library_warnings" for e in events)
    first = str(events[0]["event"])
    assert "received object" in first and "escape sequence" in first
    assert "CANARY" not in stream.getvalue()


def test_without_a_dataset_scope_the_rate_limit_holds(stream: io.StringIO) -> None:
    limiter = library_warnings.install(logging.getLogger().handlers[0], burst=5,
                                       window_seconds=3600)  # fmt: skip
    rng = random.Random(3)
    for _ in range(40):
        _decode_hostile(rng)
    assert len(_events(stream)) == 5
    assert limiter._held > 100
    limiter.window_seconds = 0  # the window is over: the next record reports what was held
    _decode_hostile(rng)
    held = [e for e in _events(stream) if "held back" in str(e["event"])]
    assert len(held) == 1 and "escape sequence" in str(held[0]["event"])
    assert "CANARY" not in stream.getvalue()


def test_nested_scopes_count_once_and_threads_keep_their_own(stream: io.StringIO) -> None:
    rng = random.Random(5)
    inner_started, outer_may_end = threading.Event(), threading.Event()

    @summarised("inner")
    def inner() -> None:
        _decode_hostile(rng)

    @summarised("outer")
    def outer() -> None:
        inner()
        inner_started.set()
        outer_may_end.wait(10)

    thread = threading.Thread(target=outer)
    thread.start()
    inner_started.wait(10)
    # Meanwhile another thread, with no scope, is rate-limited, not swallowed by the other's.
    pydicom.config.logger.warning("from another thread")
    outer_may_end.set()
    thread.join(10)
    texts = [str(e["event"]) for e in _events(stream)]
    assert texts[0] == "from another thread"
    assert len(texts) == 2 and "outer" in texts[1] and "inner" not in texts[1]


def test_own_records_and_errors_in_scope_are_never_hidden(stream: io.StringIO) -> None:
    @summarised("job")
    def handle() -> None:
        logging.getLogger("dicomnode.pipeline").warning("own warning")

    handle()
    assert [e["event"] for e in _events(stream)] == ["own warning"]


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Invalid value for VR PN: 'DOE^JANE'", "Invalid value for VR PN: …"),
        (
            "/x/y.py:12: UserWarning: The value length (70) exceeds 64",
            "UserWarning: The value length (…) exceeds …",
        ),
    ],
)
def test_kinds_withhold_values(message: str, kind: str) -> None:
    name = "py.warnings" if message.startswith("/") else "pydicom"
    record = logging.LogRecord(name, logging.WARNING, "x", 1, message, None, None)
    assert library_warnings.kind_of(record) == kind
