"""Why an input is not classified, an image failed or a result was not delivered: one code
and its English sentence per reason (skip, fail and delivery reasons alike: every one a reader
can see on a page).

Logs, the database and the API's `reason` keep the English sentence (it names DICOM things and
is what an administrator greps for). A page in another language needs the reason's code and
parameters: `parse_reason` recovers them from the sentence, so reasons already stored (and
reasons written before codes existed) are rendered in the page's language too. The page's
catalogue has one message `reason.<code>` per code, with the same placeholders.

A parameter named `reason` holds another reason (a wrapped one) and is parsed in turn.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

#: code -> English template. Literal templates and more specific ones first (parsing tries
#: them in this order).
REASONS: dict[str, str] = {
    # eligibility
    "own_output": "own output",
    "no_sop_class": "no SOP Class UID",
    "mammography": "mammography is outside the intended use",
    "dental": "dental X-ray is outside the intended use",
    "synthetic_sc": "synthetic secondary capture is not a radiograph",
    "unknown_sop_class": "an unrecognised SOP class is not a supported radiograph class",
    "sc_modality": "secondary capture with modality {modality} is not a radiograph",
    "modality": "modality {modality} is not a radiograph",
    "sop_class": "{sop_class} is not a supported radiograph class",
    "too_small": (
        "image too small to be a diagnostic radiograph ({rows}x{columns} px; the model "
        "card's min_image_size is {min_size} px per side)"
    ),
    # header checks and decoding (decode.py, grayscale.py)
    "multi_frame": "multi-frame image ({frames} frames) is not supported",
    "colour": "colour image ({samples} samples per pixel) is not supported",
    "photometric": "photometric interpretation {photometric} is not supported (greyscale only)",
    "no_pixel_data": "no pixel data",
    "no_rows_columns": "image has no rows or columns",
    "too_large": "image too large ({megapixels} megapixels)",
    "bits_allocated": "bits allocated {bits} is not supported",
    "compressed_without_syntax": "compressed pixel data without a transfer syntax",
    "pixel_data_short": "pixel data too short ({length} of {expected} bytes)",
    "stream_too_large": "compressed stream larger than Rows/Columns ({syntax})",
    "undecodable": "pixel data could not be decoded ({syntax})",
    "unexpected_shape": "decoded pixel data has an unexpected shape ({syntax})",
    "voi_lut": "VOI LUT could not be applied",
    # files (files.py, uploads)
    "empty_file": "empty file",
    "not_an_image": "not an image (no recognised image format)",
    "dicom_without_pixels": "DICOM file without pixel data (truncated, or not an image)",
    "unreadable_dicom_error": "not a readable DICOM file ({error})",
    "unreadable_dicom": "not a readable DICOM file",
    "not_dicom": "not a DICOM file",
    "no_study_uid": "DICOM file without a Study Instance UID",
    "incomplete_dataset": "incomplete DICOM dataset",
    "image_format": "{format} images are not supported",
    "multi_page": "multi-page image is not supported",
    "image_size": "image size {width}x{height} is not supported",
    "image_corrupt": "image file is truncated or corrupt",
    "encrypted_entry": "encrypted entry",
    "zip_method": "unsupported compression method",
    "deflate_invalid": "deflated dataset is not a valid deflate stream",
    "inflated_too_large": "inflated dataset larger than max_dataset_mb",
    "decoded_too_large": "decoded image larger than max_dataset_mb",
    # admission (ingest/limits.py): what every way in refuses, HTTP uploads included
    "dataset_too_large": "dataset larger than max_dataset_mb",
    "nested_too_deeply": "sequences nested too deeply",
    "invalid_sop_uid": "SOP class/instance UID is not a valid UID",
    "invalid_study_uid": "Study Instance UID missing or invalid",
    "invalid_series_uid": "Series Instance UID invalid",
    "undecodable_dataset": "dataset cannot be decoded ({error})",
    # study reports
    "left_out": "left out of the study report: {reason}",
    # jobs (work/)
    "spooled_missing": "spooled file is missing",
    "unreadable_dataset": "cannot read dataset ({error})",
    "pixel_decode_error": "pixel data cannot be decoded ({error})",
    "classified_but": "classified, but {reason}",
    "report_impossible": "study report cannot be built: {reason}",
    "deferred": "waiting: {doing} ({cause}); attempt {attempt}, next in {delay} s",
    "deferred_error": "waiting: {error} while processing",
    "unexpected": (
        "the node hit an unexpected {error} while processing this image; details are in the "
        "node log; retry the job from the API once resolved"
    ),
    # output builders (objects/): `output` is a term (the overlay, the study report, ...)
    "not_built": "the {output} cannot be built: {reason}",
    "source_invalid_uid": "source image has an invalid {attribute}",
    "source_no_uid": "source image has no {attribute}",
    "source_unknown_class": "source image has an unknown SOP Class UID",
    "source_no_pixel_description": "source image lacks its image pixel description (Rows, Columns)",
    "source_lacks": "source image lacks {attribute}",
    "builder_refused": (
        "the output builder refused the source image's header ({error}); details in the node log"
    ),
    # delivery (deliver/): the outbox's last error of a result not delivered
    "destination_gone": "destination no longer configured",
    "destination_kind": "destination does not take {kind}",
    "result_missing": "result file missing",
    "tls_required": "destination requires TLS but no TLS context was given",
    "association_lost": "association lost",
    "no_response": "no response from peer",
    "not_sent": "not sent: {error}",
    "peer_status": "peer answered 0x{status}",
    "peer_http": "peer answered HTTP {http_status}",
    "peer_refused": "peer refused it: 0x{status}",
    "not_confirmed": "not confirmed by the peer",
    "stow_failed": "STOW-RS failed: {error}",
    # association set-up (deliver/failure.py); `result`, `source`, `why` are terms
    "no_echo_response": "no response to C-ECHO",
    "rejected": "association rejected by the peer",
    "rejected_because": "association rejected by the peer ({result}, {source}: {why})",
    "aborted_by_peer": "association aborted by the peer (it accepted the connection, then aborted)",
    "no_associate_answer": (
        "association aborted: no answer to the association request within {timeout} s (the "
        "peer accepted the connection, then said nothing)"
    ),
    "connection_refused": "connection refused by {host}:{port}: nothing listens on that port",
    "host_not_found": "host name '{host}' not found ({error})",
    "timed_out": (
        "host unreachable or timed out: no answer from {host}:{port} within {timeout} s (host "
        "down, wrong address, or a firewall drops the connection)"
    ),
    "unreachable": "host unreachable: {host}:{port} ({error})",
    "cannot_connect": "cannot connect to {host}:{port} ({error})",
    "tls_handshake": "TLS handshake with {host}:{port} failed (certificate or protocol mismatch)",
    "connect_flaky": "connection to {host}:{port} failed, then succeeded on a second try",
    # written by earlier versions (still in databases): read back, no longer written
    "aborted": "association aborted",
    "no_answer": "peer unreachable or did not answer",
}

#: code -> English words a reason's parameter may hold that a page translates (message
#: `term.<code>`): the output builders' nouns, pynetdicom's words for an association rejection.
TERMS: dict[str, str] = {
    "overlay": "overlay",
    "presentation_state": "presentation state",
    "study_report": "study report",
    "spool_unreadable": "spooled file cannot be read",
    "results_unwritable": "results cannot be written",
    "rejected_permanent": "Rejected Permanent",
    "rejected_transient": "Rejected Transient",
    "service_user": "Service User",
    "service_provider_acse": "Service Provider (ACSE)",
    "service_provider_presentation": "Service Provider (Presentation)",
    "no_reason_given": "No reason given",
    "application_context": "Application context name not supported",
    "calling_ae": "Calling AE title not recognised",
    "called_ae": "Called AE title not recognised",
    "protocol_version": "Protocol version not supported",
    "temporary_congestion": "Temporary congestion",
    "local_limit": "Local limit exceeded",
    "reserved": "Reserved",
    "no_value": "(no value available)",
}

_FIELD = re.compile(r"\{(\w+)\}")


def reason(code: str, **params: object) -> str:
    """The English sentence of reason `code`."""
    return REASONS[code].format(**params)


def placeholders(template: str) -> set[str]:
    return set(_FIELD.findall(template))


def template_pattern(template: str) -> re.Pattern[str]:
    """A regular expression that matches `template`'s sentences, one group per placeholder."""
    parts = _FIELD.split(template)  # literal, name, literal, name, ..., literal
    regex = "".join(
        re.escape(part) if i % 2 == 0 else f"(?P<{part}>.+?)" for i, part in enumerate(parts)
    )
    return re.compile(regex, re.DOTALL)


def match_template(
    text: str, patterns: Iterable[tuple[str, re.Pattern[str]]]
) -> tuple[str, dict[str, str]] | None:
    """(code, parameters) of the first pattern `text` matches whole, or None."""
    for code, pattern in patterns:
        match = pattern.fullmatch(text.strip())
        if match:
            return code, match.groupdict()
    return None


@cache
def _patterns() -> list[tuple[str, re.Pattern[str]]]:
    return [(code, template_pattern(template)) for code, template in REASONS.items()]


def parse_reason(text: str) -> tuple[str, dict[str, str]] | None:
    """(code, parameters) of an English reason sentence, or None if it is not one of ours."""
    return match_template(text, _patterns())


def reason_code(text: str | None) -> str | None:
    """The code of a reason sentence (for the API's `reason_code`), or None."""
    parsed = parse_reason(text) if text else None
    return parsed[0] if parsed else None
