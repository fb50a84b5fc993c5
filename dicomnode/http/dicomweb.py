"""STOW-RS (DICOM PS3.18 10.5, Studies Store): `POST /dicomweb/studies` and
`POST /dicomweb/studies/{study}`, so that a PACS or a script can push instances over HTTPS where
DIMSE cannot cross.

Every part goes through the admission a C-STORE goes through (`ingest.admission.admit_file`:
limits, checks, durable spool write and job before the answer, audit), so the response says
"stored" only for what is on disk and queued. The body is read as it arrives: at most one part,
no larger than `node.max_dataset_mb`, is held at a time (`stow_parts`).

Answers (PS3.18 10.5.3, the body is a Store Instances Response in application/dicom+json):
200 all stored; 202 some stored, some failed; 409 none stored (FailedSOPSequence says why,
FailureReason as the C-STORE status: 0xA700 out of resources, 0xA900 not the study of the URL
or not matching its SOP class, 0xC000 cannot understand); 413 none stored, every instance over
the size limit; 400 a broken body (boundary, truncation) or no instance; 415 another media type;
406 a client that does not accept JSON; 401 without the token; 503 (Retry-After) while
`node.max_associations` STOW-RS requests are already being received, so that concurrent
requests cannot hold more than that many parts in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from pydicom import Dataset
from pydicom.sequence import Sequence
from starlette.concurrency import run_in_threadpool

from dicomnode.http.context import BEARER, ApiContext, Context
from dicomnode.http.stow_parts import (
    DICOM,
    BrokenBody,
    Part,
    PartReader,
    UnsupportedMediaType,
    boundary_of,
)
from dicomnode.ingest.admission import (
    Admitted,
    StoreContext,
    StoreStatus,
    admit_file,
    audit_received,
    looks_like_uid,
)
from dicomnode.uids import hash_uid

log = structlog.stdlib.get_logger("dicomnode.stow")

router = APIRouter(dependencies=BEARER)

#: The calling AE title recorded on jobs received over STOW-RS (there is no AE on HTTP).
STOW_CALLING = "STOW-RS"
MEDIA_TYPE = "application/dicom+json"
_ACCEPTED = ("*/*", "application/*", MEDIA_TYPE, "application/json")


@dataclass(frozen=True)
class _Requestor:
    address: str
    port: int | str


@dataclass(eq=False)
class StowRequest:
    """One request, counted in the audit trail as an association is (one row per study and
    outcome, written when the request ends; `admission.peer_address` reads `requestor`)."""

    requestor: _Requestor


class StowSlots:
    """How many STOW-RS requests are being received; at most `limit` at once. Used from the
    event loop only (no await between the check and the count), so it needs no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0


def include_stow(app: FastAPI, ctx: ApiContext) -> None:
    """STOW-RS in `app`: its routes and the request budget (`node.max_associations`, as for
    associations: each request, like each association, holds at most one dataset)."""
    app.state.stow_slots = StowSlots(ctx.settings.node.max_associations)
    app.include_router(router)


@router.post("/dicomweb/studies")
async def store_instances(request: Request, ctx: Context) -> Response:
    """Store instances of any studies (PS3.18 10.5: Studies Store)."""
    return await _stow(request, ctx, study=None)


@router.post("/dicomweb/studies/{study}")
async def store_study_instances(study: str, request: Request, ctx: Context) -> Response:
    """Store instances of one study: an instance of another study fails (0xA900)."""
    if not looks_like_uid(study):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "the study in the URL is not a UID")
    return await _stow(request, ctx, study=study)


async def _stow(request: Request, ctx: ApiContext, *, study: str | None) -> Response:
    store = ctx.store
    if store is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "STOW-RS is not available")
    if not _accepts_json(request.headers.get("accept", "")):
        raise HTTPException(status.HTTP_406_NOT_ACCEPTABLE, f"the response is {MEDIA_TYPE}")
    slots: StowSlots = request.app.state.stow_slots
    if slots.busy >= slots.limit:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "busy: retry later",
                            headers={"Retry-After": "5"})  # fmt: skip
    client = request.client
    key = StowRequest(_Requestor(client.host, client.port) if client else _Requestor("", ""))
    slots.busy += 1
    try:
        outcomes = await _receive(request, store, key=key, study=study)
    except UnsupportedMediaType as exc:
        _refused(store, key, f"HTTP 415: {exc}")
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, str(exc)) from None
    except BrokenBody as exc:
        _refused(store, key, f"HTTP 400: {exc}")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    finally:
        slots.busy -= 1
        if store.audit is not None:  # a database write: off the event loop
            await run_in_threadpool(store.audit.flush, key)
    code, body = store_instances_response(outcomes)
    log.info("STOW-RS request answered", http_status=code, instances=len(outcomes),
             stored=sum(o.admitted.status == StoreStatus.SUCCESS for o in outcomes),
             study=hash_uid(study, store.salt) if study else None)  # fmt: skip
    return Response(json.dumps(body), status_code=code, media_type=MEDIA_TYPE)


@dataclass(frozen=True)
class PartOutcome:
    admitted: Admitted
    too_large: bool = False


async def _receive(
    request: Request, store: StoreContext, *, key: StowRequest, study: str | None
) -> list[PartOutcome]:
    """Read the body part by part, admitting each as it completes."""
    reader = PartReader(boundary_of(request.headers.get("content-type", "")),
                        max_part_bytes=store.max_dataset_bytes)  # fmt: skip
    outcomes: list[PartOutcome] = []
    async for chunk in request.stream():
        for part in reader.feed(chunk):
            outcomes.append(await run_in_threadpool(_admit, store, part, key=key, study=study))
    reader.finish()
    if not outcomes:
        raise BrokenBody("the body holds no instance")
    return outcomes


def _admit(store: StoreContext, part: Part, *, key: StowRequest, study: str | None) -> PartOutcome:
    """One part through the admission every way in shares (or refused before it, naming the
    instance if its first bytes can: too large, or not a DICOM part)."""
    if part.too_large or part.media_type != DICOM:
        status_code = (
            StoreStatus.OUT_OF_RESOURCES if part.too_large else StoreStatus.CANNOT_UNDERSTAND
        )
        reason = ("dataset larger than max_dataset_mb" if part.too_large
                  else "part is not application/dicom")  # fmt: skip
        audit_received(store, calling=STOW_CALLING, study_uid=None, status=status_code,
                       reason=reason, association=key)  # fmt: skip
        uids = part.naming_uids() if part.too_large else ("", "")
        return PartOutcome(Admitted(status_code, reason, *uids), too_large=part.too_large)
    data, part.data = part.data, bytearray()  # admission holds the only reference
    admitted = admit_file(store, data, calling=STOW_CALLING, study_instance_uid=study,
                          association=key)  # fmt: skip
    return PartOutcome(admitted)


def _refused(store: StoreContext, key: StowRequest, reason: str) -> None:
    """A request refused as a whole (415, 400) is audited like a refused C-STORE."""
    audit_received(store, calling=STOW_CALLING, study_uid=None,
                   status=StoreStatus.CANNOT_UNDERSTAND, reason=reason,
                   association=key)  # fmt: skip


def store_instances_response(outcomes: list[PartOutcome]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and Store Instances Response (PS3.18 10.5.3, Annex I) in DICOM JSON."""
    stored = [o.admitted for o in outcomes if o.admitted.status == StoreStatus.SUCCESS]
    failed = [o for o in outcomes if o.admitted.status != StoreStatus.SUCCESS]
    response = Dataset()
    if stored:
        response.ReferencedSOPSequence = Sequence([_item(a) for a in stored])
    if failed:
        response.FailedSOPSequence = Sequence([_item(o.admitted, failed=True) for o in failed])
    if not failed:
        code = status.HTTP_200_OK
    elif stored:
        code = status.HTTP_202_ACCEPTED
    elif all(o.too_large for o in failed):
        code = status.HTTP_413_CONTENT_TOO_LARGE
    else:
        code = status.HTTP_409_CONFLICT
    return code, response.to_json_dict()


def _item(admitted: Admitted, *, failed: bool = False) -> Dataset:
    item = Dataset()
    if admitted.sop_class_uid:
        item.ReferencedSOPClassUID = admitted.sop_class_uid
    if admitted.sop_instance_uid:
        item.ReferencedSOPInstanceUID = admitted.sop_instance_uid
    if failed:
        item.FailureReason = int(admitted.status)
    return item


def _accepts_json(accept: str) -> bool:
    """No Accept header, or one that allows DICOM JSON (PS3.18 8.7.3: else 406)."""
    ranges = [r.split(";")[0].strip().lower() for r in accept.split(",") if r.strip()]
    return not ranges or any(r in _ACCEPTED for r in ranges)
