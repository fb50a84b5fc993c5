"""Routes of the worklist: `/api/worklist`, SC thumbnails, the page at `/` and its login.

The page is rendered on the server (Jinja2); a little plain JavaScript re-fetches the table
rows every few seconds. Filters are ordinary query parameters, so a filtered view is a link.
"""

from __future__ import annotations

import functools
import math
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from dicomnode.http.access import AccessAudit
from dicomnode.http.auth import SESSION_COOKIE, TokenAuth
from dicomnode.http.guard import LoginThrottle
from dicomnode.http.i18n import LANG_COOKIE, LANGUAGES, MESSAGES, choose_language, translator
from dicomnode.objects.sc import render_png
from dicomnode.store.worklist import (
    MAX_LIMIT,
    FilterError,
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

if TYPE_CHECKING:
    from dicomnode.http.app import ApiContext

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PUBLIC_STATIC = frozenset({"login.css"})
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
REFRESH_SECONDS = 10
THUMBNAIL_SIZE = 256
THUMBNAIL_CACHE = 512  # PNGs of ~20-40 kB each
HTTP_422 = 422  # starlette renamed the constant (…_ENTITY → …_CONTENT); the code is what counts


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
        "report_version": row.report_version,
        "received_at": row.first_received_at.isoformat(),
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


def add_api_routes(app: FastAPI, ctx: ApiContext, auth: TokenAuth) -> None:
    """`/api/worklist` and SC thumbnails, on `app` itself (so `app.routes` lists them)."""
    deps = [Depends(auth)]
    access = AccessAudit.of(app, ctx)

    @functools.lru_cache(maxsize=THUMBNAIL_CACHE)
    def render(path: str) -> bytes:
        # A result file never changes under its UID-derived path: rendering once is enough
        # (each page refresh would otherwise decode every SC again on a busy 2-core node).
        return render_png(dcmread(path), max_size=THUMBNAIL_SIZE)

    @app.get("/api/worklist", dependencies=deps)
    def worklist(
        request: Request,
        outcome: Annotated[list[StudyOutcome] | None, Query()] = None,
        state: Annotated[list[StudyState] | None, Query()] = None,
        modality: Annotated[str | None, Query(description="e.g. CR, DX")] = None,
        date_from: Annotated[date | None, Query(description="study date, inclusive")] = None,
        date_to: Annotated[date | None, Query(description="study date, inclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, Any]:
        """Studies in reading order: positive (highest probability first), doubt, negative,
        then those without an outcome yet; oldest first within a group."""
        try:
            filters = WorklistFilters(
                outcomes=tuple(outcome or ()), states=tuple(state or ()),
                modality=modality.strip().upper() if modality else None,
                date_from=date_from, date_to=date_to, limit=limit, offset=offset,
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

    @app.get(
        "/api/results/{sop_instance_uid}/thumbnail.png",
        dependencies=deps,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    def thumbnail(sop_instance_uid: str, request: Request) -> Response:
        """A PNG of a Secondary Capture the node made (what the viewer will show)."""
        found = sc_result(ctx.jobs.engine, sop_instance_uid)
        if found is None or ctx.spool is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such secondary capture")
        relative, study_uid = found
        path = ctx.spool.path(relative)
        try:
            if not path.is_file():  # deleted by retention: the cached picture is gone too
                raise FileNotFoundError(relative)
            png = render(str(path))
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


def _language(request: Request) -> str:
    return choose_language(
        query=request.query_params.get("lang"),
        cookie=request.cookies.get(LANG_COOKIE),
        accept_language=request.headers.get("accept-language", ""),
    )


def _remember_language(request: Request, response: Response, language: str) -> None:
    if request.query_params.get("lang") in MESSAGES:
        response.set_cookie(LANG_COOKIE, language, samesite="lax", max_age=365 * 86400)


def _safe_next(value: str) -> str:
    """Only same-site paths after login (no open redirect)."""
    return value if value.startswith("/") and not value.startswith("//") else "/"


def add_page_routes(app: FastAPI, ctx: ApiContext, auth: TokenAuth) -> None:
    """`/`, `/login`, `/logout` and `/static/*`. `auth` accepts the session cookie."""
    static_files = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
    access = AccessAudit.of(app, ctx)

    api = ctx.settings.api
    throttle = LoginThrottle(
        max_failures=api.login_max_failures, window_seconds=api.login_failure_window_seconds
    )

    def render_login(
        request: Request, *, error: bool, code: int, next_path: str, message: str = "wrong_token"
    ) -> Response:
        return login_page(request, error=error, code=code, next_path=_safe_next(next_path),
                          message=message)  # fmt: skip

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        if not auth.enabled:
            return RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER)
        return render_login(request, error=False, code=200, next_path=next)

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request, token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/"
    ) -> Response:
        client = request.client.host if request.client else "unknown"
        if auth.enabled and (wait := throttle.retry_after(client)):
            access.refused(request, why="sign-in refused: too many failed sign-ins (HTTP 429)")
            response = render_login(request, error=True, code=429, next_path=next,
                                    message="too_many_sign_ins")  # fmt: skip
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        if auth.enabled and not auth.check_token(token):
            throttle.failed(client)
            access.refused(request, why="sign-in refused: wrong token")  # never the text sent
            return render_login(request, error=True, code=401, next_path=next)
        throttle.succeeded(client)
        response = RedirectResponse(_safe_next(next), status.HTTP_303_SEE_OTHER)
        if auth.enabled:
            secure = request.url.scheme == "https"
            response.set_cookie(SESSION_COOKIE, auth.session_value(), httponly=True,
                                samesite="strict", secure=secure)  # fmt: skip
        return response

    @app.post("/logout", dependencies=[Depends(auth)], include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
        response.delete_cookie(SESSION_COOKIE)
        return response

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, request: Request) -> Response:
        if name not in PUBLIC_STATIC:  # the sign-in form's style is needed before signing in
            auth(request)
        path = static_files.get(name)
        if path is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return FileResponse(path, headers={"Cache-Control": "private, max-age=300"})

    @app.get("/", include_in_schema=False)
    def page(request: Request) -> Response:
        if not auth.is_authorized(request):
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return render_login(request, error=False, code=401, next_path=path)
        language = _language(request)
        params = request.query_params
        error = None
        try:
            filters = WorklistFilters.from_strings(
                outcome=params.getlist("outcome"), state=params.getlist("state"),
                modality=params.get("modality", ""), date_from=params.get("date_from", ""),
                date_to=params.get("date_to", ""), limit=params.get("limit", ""),
                offset=params.get("offset", ""),
            )  # fmt: skip
        except FilterError as exc:
            error = str(exc)
            filters = WorklistFilters()
        page = query_worklist(ctx.jobs.engine, filters)
        access.worklist(request, what="worklist page", filters=filters,
                        studies=[r.study_instance_uid for r in page.rows],
                        identifiers=show_identifiers(ctx))  # fmt: skip
        card = ctx.card()
        context = {
            "t": translator(language),
            "lang": language,
            "languages": _languages(),
            "page": page,
            "rows": [_row_view(ctx, row) for row in page.rows],
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
        _remember_language(request, response, language)
        return response


def login_page(
    request: Request, *, error: bool, code: int, next_path: str, message: str = "wrong_token"
) -> Response:
    """The sign-in form (`message`: the i18n key of the error shown when `error`)."""
    language = _language(request)
    response = TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {"t": translator(language), "lang": language, "languages": _languages(),
         "error": error, "message": message, "next": next_path},
        status_code=code,
    )  # fmt: skip
    _remember_language(request, response, language)
    return response


def _languages() -> list[tuple[str, str]]:
    return [(code, MESSAGES[code]["language_name"]) for code in LANGUAGES]


def _form_values(params: Any) -> dict[str, Any]:
    return {
        "outcome": params.get("outcome", ""),
        "state": params.get("state", ""),
        "modality": params.get("modality", ""),
        "date_from": params.get("date_from", ""),
        "date_to": params.get("date_to", ""),
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


def _row_view(ctx: ApiContext, row: WorklistRow) -> dict[str, Any]:
    data = row_json(ctx, row)
    probability = row.max_probability
    data["probability_text"] = f"{probability:.2f}" if probability is not None else "–"
    data["outcome_key"] = row.outcome.value if row.outcome else "none"
    return data
