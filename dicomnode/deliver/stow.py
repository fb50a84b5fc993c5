"""Sending results by STOW-RS (DICOM PS3.18 10.5) to a `type = "dicomweb"` destination, with
dicomweb-client: one request per study (to `{url}/studies/{study}`, so the peer checks that
every instance belongs to it), every instance's outcome read from the peer's Store Instances
Response. The outbox (`deliver/outbox.py`) retries what failed with the same backoff, the same
SOP Instance UIDs and the same delivery states as for a DIMSE destination; dicomweb-client's
own retries are off, so that one policy decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import Dataset, dcmread

from dicomnode.deliver.scu import SendOutcome
from dicomnode.destinations import DicomwebDestination
from dicomnode.imaging.reasons import reason

#: The status recorded for an instance the peer's response does not confirm (PS3.18 Table
#: I.2-2: 0110H, processing failure): not named while others are, or failed without a reason.
PROCESSING_FAILURE = 0x0110


def dicomweb_client(destination: DicomwebDestination, *, timeout: float) -> DICOMwebClient:
    """A client for `destination`, with `timeout` per request."""
    client = DICOMwebClient(destination.url, session=_session(destination), timeout=timeout)
    client.set_http_retry_params(retry=False)
    return client


def _session(destination: DicomwebDestination) -> requests.Session:
    """HTTP with the destination's authentication and TLS verification (its CA file, the
    system CAs, or none when `tls_verify = false`)."""
    session = requests.Session()
    if destination.auth == "basic":
        session.auth = (destination.username, destination.password.get_secret_value())
    elif destination.auth == "bearer":
        session.headers["Authorization"] = f"Bearer {destination.token.get_secret_value()}"
    ca = destination.tls_ca_certificate
    session.verify = str(ca) if ca and destination.tls_verify else destination.tls_verify
    return session


def send_stow(
    paths: Sequence[Path], *, destination: DicomwebDestination, timeout: float = 30.0
) -> list[SendOutcome]:
    """STOW-RS `paths`, one request per study; an outcome per path, never an exception for a
    peer that is down or refuses (those are failed outcomes, retried by the outbox)."""
    by_study: dict[str, list[tuple[Path, Dataset]]] = defaultdict(list)
    for path in paths:
        ds = dcmread(path)
        by_study[str(ds.StudyInstanceUID)].append((path, ds))
    client = dicomweb_client(destination, timeout=timeout)
    outcomes: list[SendOutcome] = []
    unreachable: str | None = None
    for study, items in by_study.items():
        if unreachable is not None:  # the peer is down (or talks nonsense): not asked again now
            outcomes += [SendOutcome(path, None, unreachable) for path, _ in items]
            continue
        try:
            answer: Dataset | None = client.store_instances(
                [ds for _, ds in items], study_instance_uid=study
            )
        except requests.HTTPError as exc:
            answer = _failure_response(exc.response)
            if answer is None:
                code = exc.response.status_code if exc.response is not None else "?"
                outcomes += [SendOutcome(path, None, reason("peer_http", http_status=code))
                             for path, _ in items]  # fmt: skip
                continue
        except (requests.RequestException, ValueError) as exc:
            unreachable = reason("stow_failed", error=type(exc).__name__)
            outcomes += [SendOutcome(path, None, unreachable) for path, _ in items]
            continue
        assert answer is not None
        outcomes += instance_outcomes(items, answer, answered_at=datetime.now(UTC))
    return outcomes


#: Boundary of the empty request `probe` sends.
_PROBE = "dicomnode-probe"


def probe(destination: DicomwebDestination, *, timeout: float) -> tuple[bool, str]:
    """(reachable with these credentials, what was seen): one STOW-RS request without any
    instance, which stores and reads nothing but is authenticated like a real one (an
    OPTIONS request is not: servers answer CORS preflights without credentials). Any answer
    but 401/403 (typically 400 or 409: no instance) will do."""
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={_PROBE}'}
    try:
        with _session(destination) as session:
            answer = session.post(f"{destination.url}/studies", data=f"--{_PROBE}--\r\n",
                                  headers=headers, timeout=timeout)  # fmt: skip
    except requests.RequestException as exc:
        return False, f"not reachable ({type(exc).__name__})"
    if answer.status_code in (401, 403):
        return False, f"credentials refused (HTTP {answer.status_code})"
    return True, f"answers (HTTP {answer.status_code} to an empty STOW-RS request)"


def _failure_response(response: requests.Response | None) -> Dataset | None:
    """The Store Instances Response of a refusal (409: none stored), when the peer sent one."""
    if response is None or response.status_code not in (409, 413) or not response.content:
        return None
    try:
        return Dataset.from_json(response.json())
    except ValueError:
        return None


def instance_outcomes(
    items: list[tuple[Path, Dataset]], answer: Dataset, *, answered_at: datetime
) -> list[SendOutcome]:
    """Each instance's outcome from a Store Instances Response (PS3.18 Annex I): referenced =
    stored (0x0000, or its WarningReason), failed = its FailureReason. An instance the response
    does not name counts as stored only if the response names none (a bare 200)."""
    stored = {str(i.get("ReferencedSOPInstanceUID", "")): i
              for i in answer.get("ReferencedSOPSequence", [])}  # fmt: skip
    failed = {str(i.get("ReferencedSOPInstanceUID", "")): i
              for i in answer.get("FailedSOPSequence", [])}  # fmt: skip
    outcomes = []
    for path, ds in items:
        uid = str(ds.SOPInstanceUID)
        if uid in failed:
            failure = int(failed[uid].get("FailureReason", PROCESSING_FAILURE))
            refused = reason("peer_refused", status=f"{failure:04X}")
            outcomes.append(SendOutcome(path, failure, refused, answered_at=answered_at))
        elif uid in stored or not (stored or failed):
            warning = int(stored[uid].get("WarningReason", 0)) if uid in stored else 0
            outcomes.append(SendOutcome(path, warning, answered_at=answered_at))
        else:
            outcomes.append(SendOutcome(path, PROCESSING_FAILURE, reason("not_confirmed"),
                                        answered_at=answered_at))  # fmt: skip
    return outcomes
