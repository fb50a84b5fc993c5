"""`POST /api/orthanc/studies/{id}`: fetch a study from Orthanc (only when `orthanc.pull` is on:
`create_app` includes this router only then)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel

from dicomnode.http.context import BEARER, Context

router = APIRouter(dependencies=BEARER)


class OrthancPullRequest(BaseModel):
    """Body of POST /api/orthanc/studies/{id}: the instances to fetch (default: the study's
    radiograph series)."""

    instances: list[str] | None = None


@router.post("/api/orthanc/studies/{orthanc_study_id}", status_code=status.HTTP_202_ACCEPTED)
def orthanc_pull(
    orthanc_study_id: str, ctx: Context, body: OrthancPullRequest | None = None
) -> dict[str, Any]:
    """Fetch the study's instances from Orthanc in the background (202 + count)."""
    # Imported here: the Orthanc client (pyorthanc, the SCP's store path) only where offered.
    from dicomnode.pacs.orthanc import OrthancError, OrthancUnavailable

    assert ctx.orthanc_pull is not None  # the router is only included with a pull path
    try:
        queued = ctx.orthanc_pull(orthanc_study_id, body.instances if body else None)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from None
    except LookupError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (OrthancError, OrthancUnavailable) as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"Orthanc: {exc}") from None
    return {"orthanc_study_id": orthanc_study_id, "queued": queued}
