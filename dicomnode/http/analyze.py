"""HTTP analysis: `POST /api/analyze`, `POST /api/analyze-study`, their results, and the
"Analyze" and "About the model" pages.

Uploads are limited while they are read (`api.max_upload_mb`; larger: 413, the rest of the
body drained up to a cap so the client reads the answer). The kind of file is found from its
content (`analysis.sniff`), never its name. Errors answer `{"detail": message, "code": code}`
with the message in the client's language (`?lang=`, the language cookie, Accept-Language).

Auth is the worklist page's: the bearer token, or the page's session cookie (SameSite=Strict;
a page on another port of the same host is the same site, so `guard.BrowserGuard` also
requires the node's own origin for a cookie POST). `send=true` changes the DICOM network, so
it needs the bearer token itself. One analysis runs at a time (the worker shares the two
cores); further requests wait their turn.

Results are kept under `data_dir/uploads/<id>/` (`uploads.py`) and listed at
`GET /api/analyses/{id}`; each downloadable file at `GET /api/analyses/{id}/files/{name}`.
"""

from __future__ import annotations

import io
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import structlog
from fastapi import Depends, FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydicom import dcmread
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from dicomnode.http.access import AccessAudit
from dicomnode.http.auth import TokenAuth
from dicomnode.http.i18n import LANGUAGES, MESSAGES, choose_language, translator
from dicomnode.http.pages import TEMPLATES, login_page
from dicomnode.http.pages import language as _language
from dicomnode.http.pages import languages as _languages
from dicomnode.http.pages import remember_language as _remember_language
from dicomnode.http.upload_audit import upload_expired_recorder
from dicomnode.store.tables import ResultKind
from dicomnode.uploads.analysis import AnalysisError, UploadKind, analyze_file, analyze_study, sniff
from dicomnode.uploads.store import UPLOADS_DIR, UploadStore
from dicomnode.uploads.studyzip import ZipLimits

if TYPE_CHECKING:
    from dicomnode.http.context import ApiContext
    from dicomnode.model.classifier import Classifier

log = structlog.stdlib.get_logger("dicomnode.web.analyze")

MIB = 1024 * 1024
#: Room for the multipart framing around the file.
FORM_OVERHEAD = MIB
#: An over-limit body is read (and thrown away) up to this much more, so the client gets the
#: 413 instead of a reset connection; beyond it the connection is closed.
DRAIN_CAP = 256 * MIB
_MEDIA_TYPES = {
    ".png": "image/png",
    ".dcm": "application/dicom",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
#: Messages the page's script needs.
_SCRIPT_KEYS = (
    "analyze.uploading", "analyze.processing", "analyze.failed", "analyze.no_preview",
    "analyze.fracture_probability", "analyze.normal_probability", "analyze.confidence",
    "analyze.download_sc", "analyze.download_sr", "analyze.download_overlay",
    "analyze.download_report", "analyze.entry", "analyze.state", "analyze.reason",
    "analyze.studies", "analyze.images", "outcome.positive", "outcome.doubt",
    "outcome.negative", "state.classified", "state.skipped", "state.failed", "study_date",
    "description", "modality", "body_part", "images", "outcome",
)  # fmt: skip


def analysis_url(upload_id: str, name: str | None = None) -> str:
    base = f"/api/analyses/{upload_id}"
    return f"{base}/files/{name}" if name else base


@dataclass
class _Body:
    more: bool = True
    received: int = 0


class _TooLarge(Exception):
    pass


def _error(exc: AnalysisError, language: str) -> JSONResponse:
    template = translator(language)(f"error.{exc.code}")
    try:
        message = template.format(**exc.params)
    except (KeyError, IndexError, ValueError):
        message = template
    return JSONResponse({"detail": message, "code": exc.code}, status_code=exc.status,
                        headers={"Content-Language": language})  # fmt: skip


def _internal_error(exc: Exception, language: str) -> JSONResponse:
    """The documented error body for an unexpected failure (500 `internal_error`); the
    traceback goes to the node log (values withheld by its PHI filter), not to the client."""
    log.error("upload analysis failed unexpectedly", error=type(exc).__name__, exc_info=exc)
    return _error(AnalysisError(500, "internal_error"), language)


def _api_language(request: Request) -> str:
    return choose_language(
        query=request.query_params.get("lang"),
        cookie=request.cookies.get("dicomnode_lang"),
        accept_language=request.headers.get("accept-language", ""),
    )


def present(result: dict[str, Any], upload_id: str, language: str) -> dict[str, Any]:
    """A stored result as the client sees it: URLs instead of file names, texts in its
    language."""
    t = translator(language)

    def decorate(item: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in item.items() if k not in ("files", "downloads")}
        out["urls"] = {k: analysis_url(upload_id, v) for k, v in item.get("files", {}).items()}
        if item.get("label"):
            out["label_text"] = t(f"label.{item['label']}")
        return out

    out = decorate(result)
    for key in ("studies", "images"):
        if key in result:
            out[key] = [decorate(item) for item in result[key]]
    out["id"] = upload_id
    out["urls"]["result"] = analysis_url(upload_id)
    out["urls"]["page"] = f"/analyze?{urlencode({'id': upload_id})}"
    out["disclaimer"] = t("disclaimer")
    out["language"] = language
    return out


def _study_uid(data: bytes) -> str | None:
    """The Study Instance UID of an uploaded DICOM file, for the audit trail of a refusal."""
    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, force=True,
                     specific_tags=["StudyInstanceUID"])  # fmt: skip
        return str(ds.get("StudyInstanceUID", "")) or None
    except Exception:  # the file was refused for being unreadable: then there is no UID
        return None


def add_analysis_routes(app: FastAPI, ctx: ApiContext) -> None:
    token = ctx.settings.api.token
    # Uploads, refusals, reads and downloads go to the audit trail (http/access.py).
    access = AccessAudit.of(app, ctx)
    # The page posts with its cookie.
    auth = TokenAuth(token, cookie_for_any_method=True, on_refused=access.refused)
    bearer = TokenAuth(token)  # POST: the header only
    store = UploadStore(ctx.settings.node.data_dir / UPLOADS_DIR)
    api = ctx.settings.api
    limit_bytes = int(api.max_upload_mb * MIB)
    limits = ZipLimits.from_settings(api)
    one_at_a_time = threading.Lock()
    expired = upload_expired_recorder(ctx.audit, retention_hours=api.upload_retention_hours)

    async def receive_file(request: Request) -> tuple[UploadFile, dict[str, str]]:
        """The single uploaded file (within the limit) and the other form fields."""
        body = _Body()

        async def receive() -> Message:
            message = await request.receive()
            if message["type"] == "http.request":
                body.received += len(message.get("body", b""))
                body.more = bool(message.get("more_body", False))
                if body.received > limit_bytes + FORM_OVERHEAD:
                    raise _TooLarge
            return message

        async def drain() -> None:
            drained = 0
            while body.more and drained < DRAIN_CAP:
                message = await request.receive()
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                body.more = bool(message.get("more_body", False))

        too_large = AnalysisError(413, "too_large", limit_mb=f"{api.max_upload_mb:g}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit_bytes + FORM_OVERHEAD:
            await drain()
            raise too_large
        try:
            form = await Request(request.scope, receive).form(max_files=4, max_fields=16)
        except _TooLarge:
            await drain()
            raise too_large from None
        except StarletteHTTPException as exc:
            raise AnalysisError(400, "bad_request") from exc
        files = [v for v in form.getlist("file") if isinstance(v, UploadFile)]
        if not files:
            await form.close()
            raise AnalysisError(400, "no_file")
        if len(files) > 1 or sum(isinstance(v, UploadFile) for _, v in form.multi_items()) > 1:
            await form.close()
            raise AnalysisError(400, "too_many_files")
        upload = files[0]
        if upload.size is not None and upload.size > limit_bytes:
            await form.close()
            raise too_large
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        return upload, fields

    def loaded_classifier() -> Classifier:
        """The model; 503 when none is loaded (checked before the upload is read)."""
        if ctx.classifier is None:
            raise AnalysisError(503, "model_not_loaded")
        return ctx.classifier

    def wants_send(request: Request, fields: dict[str, str]) -> bool:
        value = request.query_params.get("send", fields.get("send", "false"))
        return value.strip().lower() in ("1", "true", "yes", "on")

    def check_send(request: Request, kind: UploadKind, *, study: bool) -> None:
        if not bearer.is_authorized(request):
            raise AnalysisError(403, "send_needs_token")
        if kind != UploadKind.DICOM and not study:
            raise AnalysisError(422, "send_needs_dicom")
        if ctx.spool is None:
            raise AnalysisError(503, "send_unavailable")
        if not ctx.settings.destinations:
            raise AnalysisError(409, "send_no_destinations")

    def finish(directory: Path, upload_id: str, result: dict[str, Any], send: bool) -> None:
        if send:
            result["send"] = queue_results(ctx, directory, result)
        now = datetime.now(UTC)
        result["created_at"] = now.isoformat()
        hours = api.upload_retention_hours
        result["expires_at"] = (now + timedelta(hours=hours)).isoformat() if hours else None
        store.save_result(directory, result)

    def run(
        analyse: Callable[[], dict[str, Any]], *, directory: Path, upload_id: str, send: bool
    ) -> dict[str, Any]:
        """Analyse (one analysis at a time) and keep the result; on any failure, including
        cancellation, the upload's directory is removed so nothing half-made is listed."""
        with one_at_a_time:
            store.remove_expired(retention_hours=api.upload_retention_hours,
                                 on_removed=expired)  # fmt: skip
            try:
                result = analyse()
                finish(directory, upload_id, result, send)
            except BaseException:
                store.remove(directory)
                raise
            return result

    @app.post("/api/analyze", dependencies=[Depends(auth)], tags=["analysis"])
    async def analyze(request: Request) -> Response:
        """Classify one uploaded image (multipart field `file`: DICOM, PNG, JPEG, BMP, TIFF;
        recognised by content). `send=true` (query or form field; bearer token only) also
        queues the SR and SC of a DICOM upload for every destination through the outbox.

        Answers: 200 result; 400 no/empty/several files; 403 send without the bearer token;
        409 send without destinations; 413 over `api.max_upload_mb`; 415 not a supported
        format (a ZIP goes to /api/analyze-study); 422 unreadable, not a radiograph or
        smaller than the model card's `min_image_size`;
        503 model not loaded."""
        language = _api_language(request)
        data, kind = b"", None
        try:
            classifier = loaded_classifier()
            upload, fields = await receive_file(request)
            try:
                data = await upload.read()
            finally:
                await upload.close()
            if not data:
                raise AnalysisError(400, "empty_file")
            kind = sniff(data)
            if kind is None:
                raise AnalysisError(415, "unsupported_format")
            if kind == UploadKind.ZIP:
                raise AnalysisError(415, "zip_for_single")
            send = wants_send(request, fields)
            if send:
                check_send(request, kind, study=False)
            upload_id, directory = store.create()

            result = await run_in_threadpool(
                run,
                lambda: analyze_file(data, kind=kind, classifier=classifier,
                                     uid_root=ctx.settings.node.uid_root,
                                     directory=directory),
                directory=directory, upload_id=upload_id, send=send,
            )  # fmt: skip
        except AnalysisError as exc:
            study = _study_uid(data) if kind == UploadKind.DICOM else None
            access.upload_refused(request, code=exc.code, status=exc.status,
                                  kind=str(kind or ""), study_uid=study)  # fmt: skip
            return _error(exc, language)
        except Exception as exc:  # a bug, not the client's fault: still the documented JSON
            access.upload_refused(request, code=type(exc).__name__, status=500,
                                  kind=str(kind or ""), internal=True)  # fmt: skip
            return _internal_error(exc, language)
        access.uploaded(request, result=result, upload_id=upload_id, sent=send)
        log.info("upload analysed", kind=result["kind"], outcome=result["outcome"],
                 processing_ms=result["processing_ms"], sent=send)  # fmt: skip
        return JSONResponse(present(result, upload_id, language),
                            headers={"Content-Language": language})  # fmt: skip

    @app.post("/api/analyze-study", dependencies=[Depends(auth)], tags=["analysis"])
    async def analyze_study_zip(request: Request) -> Response:
        """Classify the radiographs of a ZIP of DICOM files (any folder depth), grouped by
        study: per-image and per-study results, a metadata summary and an XLSX report.
        `send=true` (bearer token only) queues every SR and SC for the destinations.

        Answers as /api/analyze, and: 413 for an archive over a limit (entries, total or
        per-entry uncompressed size, compression ratio); 415 not a ZIP; 422 a damaged
        archive, unsafe entry names (`../`, absolute) or no DICOM file in it."""
        language = _api_language(request)
        kind = ""
        try:
            classifier = loaded_classifier()
            upload, fields = await receive_file(request)
            try:
                head = await upload.read(8)
                if not head:
                    raise AnalysisError(400, "empty_file")
                if sniff(head) != UploadKind.ZIP:
                    raise AnalysisError(415, "not_zip")
                kind = str(UploadKind.ZIP)
                send = wants_send(request, fields)
                if send:
                    check_send(request, UploadKind.ZIP, study=True)
                upload_id, directory = store.create()
                archive = directory / "upload.zip"
                await upload.seek(0)
                try:
                    await run_in_threadpool(_copy_upload, upload, archive)
                except BaseException:
                    store.remove(directory)
                    raise
            finally:
                await upload.close()

            result = await run_in_threadpool(
                run,
                lambda: analyze_study(archive, classifier=classifier,
                                      uid_root=ctx.settings.node.uid_root,
                                      directory=directory, limits=limits),
                directory=directory, upload_id=upload_id, send=send,
            )  # fmt: skip
        except AnalysisError as exc:
            access.upload_refused(request, code=exc.code, status=exc.status, kind=kind)
            return _error(exc, language)
        except Exception as exc:  # a bug, not the client's fault: still the documented JSON
            access.upload_refused(request, code=type(exc).__name__, status=500, kind=kind,
                                  internal=True)  # fmt: skip
            return _internal_error(exc, language)
        access.uploaded(request, result=result, upload_id=upload_id, sent=send)
        log.info("study upload analysed", studies=len(result["studies"]),
                 **result["counts"], processing_ms=result["processing_ms"], sent=send)  # fmt: skip
        return JSONResponse(present(result, upload_id, language),
                            headers={"Content-Language": language})  # fmt: skip

    @app.get("/api/analyses/{upload_id}", dependencies=[Depends(auth)], tags=["analysis"])
    def get_analysis(upload_id: str, request: Request) -> Response:
        """A stored analysis (until `api.upload_retention_hours` after it was made)."""
        language = _api_language(request)
        result = store.load_result(upload_id)
        if result is None:
            return _error(AnalysisError(404, "not_found"), language)
        access.analysis_read(request, result=result, upload_id=upload_id)
        return JSONResponse(present(result, upload_id, language))

    @app.get("/api/analyses/{upload_id}/files/{name}", dependencies=[Depends(auth)],
             tags=["analysis"])  # fmt: skip
    def get_analysis_file(upload_id: str, name: str, request: Request) -> Response:
        """A result file of an analysis: overlay PNG, SC/SR (DICOM), report (XLSX)."""
        path = store.file(upload_id, name)
        result = store.load_result(upload_id) if path is not None else None
        if path is None or result is None:
            return _error(AnalysisError(404, "not_found"), _api_language(request))
        access.downloaded(request, result=result, upload_id=upload_id, name=name)
        media_type = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
        inline = media_type == "image/png"
        return FileResponse(path, media_type=media_type, filename=None if inline else name,
                            headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip

    _add_pages(app, ctx, auth)


def _copy_upload(upload: UploadFile, target: Path) -> None:
    with open(target, "xb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)


def queue_results(ctx: ApiContext, directory: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Put the SR/SC of an analysis into the outbox (spool file + Result + one Delivery per
    destination), exactly as the pipeline does, so retries and the API's delivery states
    work. Idempotent by SOP Instance UID: an object the node already made (same UID, since
    both derive it from the source) is not overwritten, only queued for destinations it
    has not been queued for."""
    assert ctx.spool is not None
    names: list[tuple[ResultKind, str]] = []
    for item in [result, *result.get("studies", []), *result.get("images", [])]:
        files = item.get("files", {})
        names += [(ResultKind.SC, files["sc"])] if "sc" in files else []
        names += [(ResultKind.SR, files["sr"])] if "sr" in files else []
    destinations = [d.name for d in ctx.settings.destinations]
    queued = []
    for kind, name in names:
        path = directory / name
        ds = dcmread(path, stop_before_pixels=True)
        uid = str(ds.SOPInstanceUID)
        relative = ctx.spool.relative_path(uid, kind="out")
        if not ctx.spool.exists(relative):
            ctx.spool.write_bytes(relative, path.read_bytes())
        row = ctx.jobs.add_result(kind=kind, sop_instance_uid=uid,
                                  study_instance_uid=str(ds.StudyInstanceUID), path=relative,
                                  destinations=destinations, job_id=None,
                                  version=int(ds.get("InstanceNumber") or 1))  # fmt: skip
        deliveries = ctx.jobs.deliveries_for([row.id] if row.id is not None else [])
        queued.append({"kind": str(kind), "sop_instance_uid": uid,
                       "deliveries": [{"destination": d.destination, "state": str(d.state)}
                                      for d in deliveries]})  # fmt: skip
    return {"requested": True, "destinations": destinations, "results": queued}


# --- pages ------------------------------------------------------------------------------------


def _lang_links(request: Request) -> dict[str, str]:
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return {
        code: request.url.path + "?" + urlencode([*items, ("lang", code)]) for code in LANGUAGES
    }


def _add_pages(app: FastAPI, ctx: ApiContext, auth: TokenAuth) -> None:
    api = ctx.settings.api

    def page(request: Request, template: str, **extra: Any) -> Response:
        language = _language(request)
        if not auth.is_authorized(request):  # the sign-in form, answered 401 like the worklist
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return login_page(request, error=False, code=status.HTTP_401_UNAUTHORIZED,
                              next_path=target)  # fmt: skip
        t = translator(language)
        card = ctx.card()
        context = {
            "t": t,
            "lang": language,
            "languages": _languages(),
            "lang_links": _lang_links(request),
            "card": card,
            "untrained": card is not None and not card.trained,
            "auth_enabled": auth.enabled,
            **extra,
        }
        response = TEMPLATES.TemplateResponse(request, template, context)
        response.headers["Cache-Control"] = "no-store"
        _remember_language(request, response, language)
        return response

    @app.get("/analyze", include_in_schema=False)
    def analyze_page(request: Request) -> Response:
        language = _language(request)
        catalog = {key: translator(language)(key) for key in _SCRIPT_KEYS}
        limit = t_format(translator(language)("analyze.limit"), limit_mb=f"{api.max_upload_mb:g}",
                         hours=f"{api.upload_retention_hours:g}")  # fmt: skip
        return page(request, "analyze.html", active="analyze", messages=catalog,
                    limit_text=limit, max_upload_bytes=int(api.max_upload_mb * MIB))  # fmt: skip

    @app.get("/about-model", include_in_schema=False)
    def about_page(request: Request) -> Response:
        # The page's own, more specific banner replaces the general one.
        return page(request, "about_model.html", active="about", untrained=False)


def t_format(template: str, **params: str) -> str:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template


__all__ = ["MESSAGES", "add_analysis_routes", "present", "queue_results"]
