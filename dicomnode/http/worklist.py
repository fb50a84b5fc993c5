"""Routes of the worklist: `/api/worklist`, SC thumbnails and the page at `/` (its sign-in:
http/login.py).

The page is rendered on the server (Jinja2); a little plain JavaScript re-fetches the table
rows every few seconds. Filters are ordinary query parameters, so a filtered view is a link.
"""

from __future__ import annotations

import functools
from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import Response
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicomnode.http.access import Access
from dicomnode.http.context import BEARER, ApiContext, Context, PageAuth
from dicomnode.http.i18n import LANGUAGES, translator
from dicomnode.http.jobs import iso
from dicomnode.http.pages import TEMPLATES, language, languages, login_page, remember_language
from dicomnode.http.worklist_view import headers, model_json, row_view
from dicomnode.objects.sc import render_png
from dicomnode.store.worklist import (
    MAX_LIMIT,
    FilterError,
    SortKey,
    StudyOutcome,
    StudyState,
    WorklistFilters,
    WorklistPage,
    WorklistRow,
    format_date,
    format_time,
    query_worklist,
    sc_result,
)

REFRESH_SECONDS = 10
THUMBNAIL_SIZE = 256
THUMBNAIL_CACHE = 512  # PNGs of ~20-40 kB each
HTTP_422 = 422  # starlette renamed the constant (…_ENTITY → …_CONTENT); the code is what counts

#: `/api/worklist` and SC thumbnails (behind the bearer token).
router = APIRouter(dependencies=BEARER)
#: The page at `/` (the bearer token or the session cookie; without: the sign-in form).
page_router = APIRouter(include_in_schema=False)


def thumbnail_url(sop_instance_uid: str) -> str:
    return f"/api/results/{sop_instance_uid}/thumbnail.png"


def viewer_link(template: str, study_instance_uid: str) -> str | None:
    """`api.viewer_url` with {study_instance_uid} filled in; None when not configured."""
    if not template:
        return None
    return template.replace("{study_instance_uid}", study_instance_uid)


def show_identifiers(ctx: ApiContext) -> bool:
    """Patient identifiers only ever go out behind a token, and only when configured to."""
    return bool(ctx.settings.api.token) and ctx.settings.api.show_patient_identifiers


def served_version(ctx: ApiContext) -> str | None:
    """The version of the model the node serves now (None while it is being prepared)."""
    card = ctx.card()
    return card.version if card is not None else None


def row_json(ctx: ApiContext, row: WorklistRow) -> dict[str, Any]:
    data: dict[str, Any] = {
        "study_instance_uid": row.study_instance_uid,
        "study_date": format_date(row.study_date),
        "study_time": format_time(row.study_time),
        "study_description": row.study_description,
        "modalities": list(row.modalities),
        "body_part": row.body_part,
        "images": row.images,
        "images_classified": row.images_classified,
        "outcome": row.outcome.value if row.outcome else None,
        "max_probability": row.max_probability,
        "state": row.state.value,
        # Why a failed study failed (a failed image's reason, or a delivery's last error).
        "reason": row.reason,
        "report_version": row.report_version,
        "received_at": iso(row.first_received_at),
        "reported_at": iso(row.reported_at),
        "model": model_json(
            name=row.model_name,
            version=row.model_version,
            trained=row.model_trained,
            served_version=served_version(ctx),
            count=row.model_count,
        ),
        "links": {
            "study": f"/api/studies/{row.study_instance_uid}",
            "viewer": viewer_link(ctx.settings.api.viewer_url, row.study_instance_uid),
            "thumbnails": [thumbnail_url(uid) for uid in row.secondary_captures],
        },
    }
    if show_identifiers(ctx):
        data["patient"] = {
            "name": row.patient_name,
            "id": row.patient_id,
            "accession_number": row.accession_number,
        }
    return data


def _served_filter(ctx: ApiContext, served_only: bool) -> str | None:
    if not served_only:
        return None
    # While the model is being prepared nothing is served yet: keep no old results out.
    return served_version(ctx) or None


@functools.lru_cache(maxsize=THUMBNAIL_CACHE)
def _render(path: str) -> bytes:
    # A result file never changes under its UID-derived path: rendering once is enough
    # (each page refresh would otherwise decode every SC again on a busy 2-core node).
    return render_png(dcmread(path), max_size=THUMBNAIL_SIZE)


@router.get("/api/worklist")
def worklist(
    request: Request,
    ctx: Context,
    access: Access,
    outcome: Annotated[list[StudyOutcome] | None, Query()] = None,
    state: Annotated[list[StudyState] | None, Query()] = None,
    modality: Annotated[str | None, Query(description="e.g. CR, DX")] = None,
    date_from: Annotated[date | None, Query(description="study date, inclusive")] = None,
    date_to: Annotated[date | None, Query(description="study date, inclusive")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
    sort: Annotated[SortKey, Query(description="column; triage: reading order")] = SortKey.TRIAGE,
    order: Annotated[Literal["asc", "desc"], Query()] = "asc",
    served_only: Annotated[
        bool, Query(description="only studies all of whose results the model served now made")
    ] = False,
) -> dict[str, Any]:
    """Studies in reading order: positive (highest probability first), doubt, negative,
    then those without an outcome yet; oldest first within a group. With `sort`, by that
    column first (empty values last), reading order within ties."""
    try:
        filters = WorklistFilters(
            outcomes=tuple(outcome or ()), states=tuple(state or ()),
            modality=modality.strip().upper() if modality else None,
            date_from=date_from, date_to=date_to, limit=limit, offset=offset,
            sort=sort, descending=order == "desc",
            model_version=_served_filter(ctx, served_only),
        )  # fmt: skip
    except FilterError as exc:
        raise HTTPException(HTTP_422, str(exc)) from None
    page = query_worklist(ctx.jobs.engine, filters)
    access.worklist(request, what="GET /api/worklist", filters=filters,
                    studies=[r.study_instance_uid for r in page.rows],
                    identifiers=show_identifiers(ctx))  # fmt: skip
    return {
        "studies": [row_json(ctx, row) for row in page.rows],
        "total": page.total,
        "limit": limit,
        "offset": offset,
    }


@router.get(
    "/api/results/{sop_instance_uid}/thumbnail.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def thumbnail(sop_instance_uid: str, request: Request, ctx: Context, access: Access) -> Response:
    """A PNG of a Secondary Capture the node made (what the viewer will show)."""
    found = sc_result(ctx.jobs.engine, sop_instance_uid)
    if found is None or ctx.spool is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such secondary capture")
    relative, study_uid = found
    path = ctx.spool.path(relative)
    try:
        if not path.is_file():  # deleted by retention: the cached picture is gone too
            raise FileNotFoundError(relative)
        png = _render(str(path))
    except FileNotFoundError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, "secondary capture no longer stored"
        ) from None
    except (InvalidDicomError, ValueError, OSError) as exc:
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            f"secondary capture cannot be rendered ({type(exc).__name__})",
        ) from None
    access.read(request, study_uid=study_uid, what="SC thumbnail",
                instance_uid=sop_instance_uid, key=("thumbnail", sop_instance_uid))  # fmt: skip
    return Response(png, media_type="image/png",
                    headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip


# --- the page ---------------------------------------------------------------------------------


@page_router.get("/")
def page(request: Request, ctx: Context, access: Access, auth: PageAuth) -> Response:
    if not auth.is_authorized(request):
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return login_page(request, error=False, code=401, next_path=path)
    chosen = language(request)
    params = request.query_params
    error = None
    try:
        filters = WorklistFilters.from_strings(
            outcome=params.getlist("outcome"), state=params.getlist("state"),
            modality=params.get("modality", ""), date_from=params.get("date_from", ""),
            date_to=params.get("date_to", ""), limit=params.get("limit", ""),
            offset=params.get("offset", ""), sort=params.get("sort", ""),
            order=params.get("order", ""),
            model_version=_served_filter(ctx, params.get("served_only") == "1"),
        )  # fmt: skip
    except FilterError as exc:
        error = str(exc)
        filters = WorklistFilters()
    page = query_worklist(ctx.jobs.engine, filters)
    access.worklist(request, what="worklist page", filters=filters,
                    studies=[r.study_instance_uid for r in page.rows],
                    identifiers=show_identifiers(ctx))  # fmt: skip
    card = ctx.card()
    t = translator(chosen)
    context = {
        "t": t,
        "lang": chosen,
        "languages": languages(),
        "page": page,
        "rows": [row_view(row, row_json(ctx, row), t) for row in page.rows],
        "columns": headers(
            filters, identifiers=show_identifiers(ctx), link=functools.partial(_with, request), t=t
        ),
        "filters": filters,
        "form": _form_values(params),
        "error": error,
        "card": card,
        "untrained": card is not None and not card.trained,
        "show_identifiers": show_identifiers(ctx),
        "auth_enabled": auth.enabled,
        "refresh_seconds": REFRESH_SECONDS,
        "outcomes": [o.value for o in StudyOutcome],
        "states": [s.value for s in StudyState],
        "pages": _pagination(request, page),
        "lang_links": {code: _with(request, lang=code, offset=None) for code in LANGUAGES},
    }
    template = "rows.html" if params.get("fragment") == "rows" else "worklist.html"
    code = HTTP_422 if error else 200
    response = TEMPLATES.TemplateResponse(request, template, context, status_code=code)
    response.headers["Cache-Control"] = "no-store"
    remember_language(request, response, chosen)
    return response


def _form_values(params: Any) -> dict[str, Any]:
    return {
        "outcome": params.get("outcome", ""),
        "state": params.get("state", ""),
        "modality": params.get("modality", ""),
        "date_from": params.get("date_from", ""),
        "date_to": params.get("date_to", ""),
        "served_only": params.get("served_only") == "1",
        "sort": params.get("sort", ""),
        "order": params.get("order", ""),
    }


def _with(request: Request, **changes: Any) -> str:
    """The current URL with some query parameters changed (None removes one)."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    items += [(k, str(v)) for k, v in changes.items() if v is not None]
    items = [(k, v) for k, v in items if k != "fragment"]
    return "/" + (f"?{urlencode(items)}" if items else "")


def _pagination(request: Request, page: WorklistPage) -> dict[str, Any]:
    f = page.filters
    previous = max(0, f.offset - f.limit)
    return {
        "number": f.offset // f.limit + 1,
        "count": max(1, -(-page.total // f.limit)),
        "previous": _with(request, offset=previous) if f.offset > 0 else None,
        "next": _with(request, offset=f.offset + f.limit)
        if f.offset + f.limit < page.total
        else None,
    }
