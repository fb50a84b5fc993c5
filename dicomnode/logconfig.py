"""structlog set-up: one JSON object per line (console renderer on a terminal), stdlib loggers
(pynetdicom, uvicorn, apscheduler) routed through the same processors, and a PHI filter.

The PHI filter is the last line of defence: code never logs patient attributes or raw UIDs on
purpose, but anything that slips into an event (a key naming a patient attribute, a UID inside
a message from a library) is hashed before it is written. Libraries put data values between
quotes in their messages and exceptions ("Invalid value for VR PN: 'DOE^JOHN'"), so quoted text
in library messages, Python warnings and tracebacks is withheld; a pydicom object passed as a
value is never rendered.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from dicomnode import library_warnings
from dicomnode.uids import hash_uid

#: Event keys whose values are patient attributes: never written, only hashed.
PHI_KEYS = frozenset(
    {
        "patient_name", "patientname", "patient_id", "patientid", "patient_birth_date",
        "patientbirthdate", "accession_number", "accessionnumber", "other_patient_ids",
        "patient_address", "referring_physician_name", "institution_name",
        "study_instance_uid", "series_instance_uid", "sop_instance_uid",
    }
)  # fmt: skip
#: A run of at least four dot-separated numbers: a DICOM UID, wherever it appears.
UID_PATTERN = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?![\w.])")

_salt = ""


def set_salt(salt: str) -> None:
    global _salt
    _salt = salt


def scrub_text(text: str) -> str:
    """Replace every UID-looking run in free text by its salted hash (a network address
    written as host:port, //host or @host is left readable)."""
    return UID_PATTERN.sub(lambda m: _hash_unless_address(m, text), text)


def _hash_unless_address(match: re.Match[str], text: str) -> str:
    value = match.group(0)
    parts = value.split(".")
    if len(parts) == 4 and all(int(p) <= 255 for p in parts):
        start, end = match.span()
        if (
            re.match(r":\d", text[end : end + 2])
            or text[max(0, start - 2) : start] == "//"
            or text[start - 1 : start] == "@"
        ):
            return value
    return "uid:" + hash_uid(value, _salt)


#: Quoted text, except the file names of traceback lines (`File "x.py", line 3`).
_QUOTED = re.compile(r"(?<!File )(?:'[^'\n]*'|\"[^\"\n]*\")")


def redact_quoted(text: str) -> str:
    """Withhold quoted values (where libraries put data), then hash UIDs."""
    return scrub_text(_QUOTED.sub("'…'", text))


def _is_dicom_object(value: Any) -> bool:
    module = type(value).__module__ or ""
    return module.startswith(("pydicom", "highdicom", "pynetdicom"))


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub_value(v) for v in value)
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if _is_dicom_object(value):
        return f"<{type(value).__name__} withheld>"
    return redact_quoted(str(value))  # an exception, a path, …: rendered here, scrubbed


def phi_filter(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hash patient attributes and UIDs that slipped into an event."""
    for key in list(event_dict):
        if key.lower() in PHI_KEYS:
            value = event_dict.pop(key)
            event_dict[key + "_hash"] = hash_uid(str(value), _salt)
        elif key in ("exception", "stack"):
            event_dict[key] = redact_quoted(str(event_dict[key]))
        elif key not in ("timestamp", "level", "logger"):
            event_dict[key] = _scrub_value(event_dict[key])
    return event_dict


def configure_logging(
    *, level: str = "INFO", json: bool | None = None, stream: TextIO | None = None, salt: str = ""
) -> None:
    """Configure structlog and the stdlib root logger once, at the composition root."""
    set_salt(salt)
    stream = stream or sys.stdout
    if json is None:
        json = not stream.isatty()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        phi_filter,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, _to_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared[:-1], _stdlib_message_scrub, phi_filter],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    library_warnings.install(handler)  # one summary per dataset, not a line per odd byte
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs dataset identifiers and every PDU at DEBUG/INFO: keep it to warnings,
    # without its standard event handlers and without identifiers even if someone lowers it.
    import pynetdicom

    pynetdicom._config.LOG_REQUEST_IDENTIFIERS = False
    pynetdicom._config.LOG_RESPONSE_IDENTIFIERS = False
    pynetdicom._config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.captureWarnings(False)  # (re)install: someone may have swapped showwarning since
    logging.captureWarnings(True)  # Python warnings (pydicom's value checks) go through here
    _log_uncaught()
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # Alembic says "Context impl …", "Will assume …" and one line per revision at every start,
    # even with nothing to do; dicomnode.store.db logs a migration that ran, once.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.WARNING)  # logs raw UIDs at INFO
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # so does dicomweb-client
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def _to_formatter(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, method, event_dict)  # type: ignore[return-value]


def _stdlib_message_scrub(
    _: Any, __: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Messages of other libraries: UIDs hashed, quoted values withheld."""
    event = event_dict.get("event")
    if isinstance(event, str):
        own = str(event_dict.get("logger", "")).startswith("dicomnode")
        event_dict["event"] = scrub_text(event) if own else redact_quoted(event)
    return event_dict


def _log_uncaught() -> None:
    """Uncaught exceptions (main thread or any other) become one filtered JSON event, not a raw
    traceback on stderr."""
    crash = logging.getLogger("dicomnode.crash")

    def main_hook(exc_type: type[BaseException], exc: BaseException, tb: Any) -> None:
        crash.critical("uncaught exception", exc_info=(exc_type, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        crash.critical(f"uncaught exception in thread {name}", exc_info=exc_info)  # type: ignore[arg-type]

    sys.excepthook = main_hook
    threading.excepthook = thread_hook


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
