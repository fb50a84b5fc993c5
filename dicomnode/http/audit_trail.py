"""`GET /api/audit`: the audit trail, newest first. Reading it is itself an audit event."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, status

from dicomnode.audit import AuditAction, AuditEventID, event_json
from dicomnode.http.access import client_id
from dicomnode.http.context import BEARER, Context

router = APIRouter(dependencies=BEARER)


@router.get("/api/audit")
def audit_events(
    request: Request,
    ctx: Context,
    since: datetime | None = None,
    until: datetime | None = None,
    event: str | None = None,
    actor: str | None = None,
    study: Annotated[str | None, Query(description="Study Instance UID (hashed here)")] = None,
    outcome: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Audit events, newest first (PS3.15-shaped; objects are salted hashes)."""
    if ctx.audit is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "audit trail not available")
    rows = ctx.audit.query(since=since, until=until, event=event, actor=actor,
                           study_uid=study, outcome=outcome, limit=limit,
                           offset=offset)  # fmt: skip
    ctx.audit.record(event=AuditEventID.AUDIT_LOG_USED, action=AuditAction.READ,
                     actor=client_id(request, ctx.settings.node.log_salt), count=len(rows),
                     detail="GET /api/audit")  # fmt: skip
    return {"events": [event_json(r) for r in rows], "limit": limit, "offset": offset}
