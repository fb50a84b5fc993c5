"""The log pipeline keeps patient data out: library messages, warnings, tracebacks, objects."""

from __future__ import annotations

import io
import json
import logging
import threading
import warnings

import pydicom
import structlog

from dicomnode.logconfig import configure_logging, get_logger

CANARY = "CANARY^PHI7Q"
UID = "1.2.826.0.1.3680043.8.498.4242.1"


def _configured() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream, salt="s")
    structlog.contextvars.clear_contextvars()
    return stream


def _events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_library_messages_tracebacks_and_warnings_are_json_without_phi():
    stream = _configured()
    try:
        raise ValueError(f"Invalid value for VR PN: '{CANARY}' in {UID}")
    except ValueError as exc:
        logging.getLogger("pynetdicom.service_class").exception("Exception in handler")
        get_logger("dicomnode.t").exception("job crashed")
        get_logger("dicomnode.t").warning("failed", error=exc)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"Invalid value for VR DA: '{CANARY}'", UserWarning, stacklevel=1)
    logging.getLogger("highdicom.sr").error(f"bad name {CANARY!r}")
    out = stream.getvalue()
    assert CANARY not in out and UID not in out
    events = _events(stream)  # every line is JSON
    assert [e["logger"] for e in events] == [
        "pynetdicom.service_class", "dicomnode.t", "dicomnode.t", "py.warnings", "highdicom.sr",
    ]  # fmt: skip
    assert "Traceback" in events[0]["exception"] and "ValueError" in events[0]["exception"]
    assert 'File "' in events[1]["exception"]  # file names of tracebacks stay readable


def test_dicom_objects_are_never_rendered():
    stream = _configured()
    ds = pydicom.Dataset()
    ds.PatientName = CANARY
    ds.StudyInstanceUID = UID
    get_logger("dicomnode.t").info("oops", ds=ds, name=ds.PatientName, element=ds["PatientName"])
    [event] = _events(stream)
    assert CANARY not in stream.getvalue() and UID not in stream.getvalue()
    assert event["ds"] == "<Dataset withheld>" and event["name"] == "<PersonName withheld>"


def test_stdlib_loggers_share_the_pipeline_and_pynetdicom_stays_quiet():
    stream = _configured()
    import pynetdicom

    assert pynetdicom._config.LOG_REQUEST_IDENTIFIERS is False
    assert pynetdicom._config.LOG_RESPONSE_IDENTIFIERS is False
    assert pynetdicom._config.LOG_HANDLER_LEVEL == "none"
    logging.getLogger("pynetdicom.assoc").info(f"identifier {CANARY}")  # below WARNING: dropped
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("apscheduler.scheduler").warning("Run time of job missed")
    assert [e["logger"] for e in _events(stream)] == ["uvicorn.error", "apscheduler.scheduler"]


def test_uncaught_thread_exceptions_become_one_filtered_event():
    stream = _configured()

    def boom() -> None:
        raise RuntimeError(f"value '{CANARY}'")

    thread = threading.Thread(target=boom, name="worker-x")
    thread.start()
    thread.join()
    [event] = _events(stream)
    assert event["level"] == "critical" and "worker-x" in event["event"]
    assert CANARY not in stream.getvalue()


def test_network_addresses_stay_readable_but_a_bare_dotted_quad_is_hashed():
    from dicomnode.logconfig import scrub_text

    for text in ("http://127.0.0.1:8000", "ORTHANC@10.0.0.7:4242", "orthanc 127.0.0.1:8042"):
        assert scrub_text(text) == text
    assert "1.2.3.4" not in scrub_text("uid 1.2.3.4") and UID not in scrub_text(f"x {UID}:1")
