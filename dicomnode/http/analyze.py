"""HTTP analysis: `POST /api/analyze`, `POST /api/analyze-study`, their results, and the
"Analyze" and "About the model" pages.

Uploads are limited while they are read (`api.max_upload_mb`; larger: 413, the rest of the
body drained up to a cap so the client reads the answer). The kind of file is found from its
content (`analysis.sniff`), never its name. Errors answer `{"detail": message, "code": code}`
with the message in the client's language (`?lang=`, the language cookie, Accept-Language),
and `"reason"` when something in the file refused it (e.g. "modality CT is not a radiograph").
A ZIP gives one result per study (`studies`), each with its own outcome or reason.
`POST /api/preview` renders a DICOM (or TIFF) upload for the page before it is analysed.

Auth is the worklist page's: the bearer token, or the page's session cookie (SameSite=Strict;
a page on another port of the same host is the same site, so `guard.BrowserGuard` also
requires the node's own origin for a cookie POST). `send=true` changes the DICOM network, so
it needs the bearer token itself. One analysis runs at a time (the worker shares the two
cores); further requests wait their turn.

Results are kept under `data_dir/uploads/<id>/` (`uploads/store.py`) and listed at
`GET /api/analyses/{id}`; each downloadable file at `GET /api/analyses/{id}/files/{name}`.

Routes live on the module-level `router`; what they share within an app (store, auth, lock) is
`analyze_service.Analysis`, a dependency. The upload body is read by `analyze_upload`, the HTML
pages are `analyze_pages`; `include_analysis` puts all of it into an app.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from pydicom import dcmread

from dicomnode.http import analyze_pages
from dicomnode.http.analyze_dates import format_date
from dicomnode.http.analyze_service import Analysis, analysis, authorized
from dicomnode.http.analyze_upload import copy_upload, receive_file
from dicomnode.http.i18n import MESSAGES, choose_language, translator
from dicomnode.imaging.reasons import reason_code
from dicomnode.uploads.analysis import AnalysisError, UploadKind, analyze_file, analyze_study, sniff
from dicomnode.uploads.preview import upload_preview

if TYPE_CHECKING:
    from dicomnode.http.context import ApiContext

log = structlog.stdlib.get_logger("dicomnode.web.analyze")

_MEDIA_TYPES = {
    ".png": "image/png",
    ".dcm": "application/dicom",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

router = APIRouter(dependencies=[Depends(authorized)], tags=["analysis"])


def include_analysis(app: FastAPI, ctx: ApiContext) -> None:
    """Analysis in `app`: its shared state, the API routes and the pages."""
    app.state.analysis = Analysis.for_app(app, ctx)
    app.include_router(router)
    app.include_router(analyze_pages.router)


def analysis_url(upload_id: str, name: str | None = None) -> str:
    base = f"/api/analyses/{upload_id}"
    return f"{base}/files/{name}" if name else base


def _error(exc: AnalysisError, language: str) -> JSONResponse:
    """`detail` in the client's language; a skip reason also as English `reason` and its
    `reason_code` (imaging/reasons.py)."""
    t = translator(language)
    params = dict(exc.params)
    body: dict[str, Any] = {"code": exc.code}
    english = params.get("reason")
    if isinstance(english, str):
        body |= {"reason": english, "reason_code": reason_code(english)}
        params["reason"] = t.reason(english)
    body["detail"] = t.format(f"error.{exc.code}", **params)
    return JSONResponse(body, status_code=exc.status,
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
    """A stored result as the client sees it: URLs instead of file names, texts (and study
    dates, `*_text`) in its language."""
    t = translator(language)

    def decorate(item: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in item.items() if k not in ("files", "downloads")}
        out["urls"] = {k: analysis_url(upload_id, v) for k, v in item.get("files", {}).items()}
        if item.get("label"):  # "uncertain": an analysis stored before the one vocabulary
            label = "indeterminate" if item["label"] == "uncertain" else item["label"]
            out["label_text"] = t(f"label.{label}")
        if isinstance(item.get("model"), dict):  # the UNTRAINED DEMO mark in its language
            model = item["model"]
            out["model"] = {
                **model,
                "display_text": t.model_label(
                    str(model.get("name", "")), trained=not model.get("untrained_demo")
                ),
            }
        if item.get("reason"):  # `reason` stays English (as in logs); its text for the page:
            out["reason_code"] = reason_code(item["reason"])
            out["reason_text"] = t.reason(item["reason"])
        return out

    out = decorate(result)
    for key in ("studies", "images"):
        if key in result:
            out[key] = [decorate(item) for item in result[key]]
    for study in out.get("studies", []):
        if isinstance(study.get("images"), int):  # "3 of 21 images": the noun agrees with 21
            of_images = t.count("count.of_images", study["images"])
            study["images_text"] = t.format("analyze.study_images",
                                            classified=study.get("classified", 0),
                                            images=of_images)  # fmt: skip
        summary = study["summary"] = dict(study.get("summary", {}))
        summary["study_date_text"] = format_date(summary.get("study_date"), language)
    if isinstance(out.get("dicom"), dict):
        out["dicom"] = {
            **out["dicom"],
            "study_date_text": format_date(out["dicom"].get("study_date"), language),
        }
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


def _wants_send(request: Request, fields: dict[str, str]) -> bool:
    value = request.query_params.get("send", fields.get("send", "false"))
    return value.strip().lower() in ("1", "true", "yes", "on")


@router.post("/api/analyze")
async def analyze(request: Request, service: Annotated[Analysis, Depends(analysis)]) -> Response:
    """Classify one uploaded image (multipart field `file`: DICOM, PNG, JPEG, BMP, TIFF;
    recognised by content). `send=true` (query or form field; bearer token only) also
    queues the SR and SC of a DICOM upload for every destination through the outbox.

    Answers: 200 result; 400 no/empty/several files; 403 send without the bearer token;
    409 send without destinations; 413 over `api.max_upload_mb`, or `file_refused`: a DICOM
    dataset over `node.max_dataset_mb` (once inflated too) or a picture decoding to more;
    415 not a supported format (a ZIP goes to /api/analyze-study); 422 unreadable, not a
    radiograph or smaller than the model card's `min_image_size`, or `file_refused`: a DICOM
    file the C-STORE admission refuses (sequences nested too deeply, invalid UIDs; `reason`
    and `reason_code` are the admission's); 503 model not loaded."""
    language = _api_language(request)
    data, kind = b"", None
    try:
        classifier = service.classifier()
        upload, fields = await receive_file(request, max_upload_mb=service.api.max_upload_mb)
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
        send = _wants_send(request, fields)
        if send:
            service.check_send(request, kind, study=False)
        upload_id, directory = service.store.create()

        result = await run_in_threadpool(
            service.run,
            lambda: analyze_file(data, kind=kind, classifier=classifier,
                                 uid_root=service.uid_root, directory=directory,
                                 max_dataset_bytes=service.max_dataset_bytes,
                                 language=service.ctx.settings.outputs.language),
            directory=directory, send=send,
        )  # fmt: skip
    except AnalysisError as exc:
        study = _study_uid(data) if kind == UploadKind.DICOM else None
        service.access.upload_refused(request, code=exc.code, status=exc.status,
                                      kind=str(kind or ""), study_uid=study)  # fmt: skip
        return _error(exc, language)
    except Exception as exc:  # a bug, not the client's fault: still the documented JSON
        service.access.upload_refused(request, code=type(exc).__name__, status=500,
                                      kind=str(kind or ""), internal=True)  # fmt: skip
        return _internal_error(exc, language)
    service.access.uploaded(request, result=result, upload_id=upload_id, sent=send)
    log.info("upload analysed", kind=result["kind"], outcome=result["outcome"],
             processing_ms=result["processing_ms"], sent=send)  # fmt: skip
    return JSONResponse(present(result, upload_id, language),
                        headers={"Content-Language": language})  # fmt: skip


@router.post("/api/analyze-study")
async def analyze_study_zip(
    request: Request, service: Annotated[Analysis, Depends(analysis)]
) -> Response:
    """Classify the radiographs of a ZIP of DICOM files (any folder depth), grouped by
    study: per-image and per-study results, a metadata summary and an XLSX report.
    `send=true` (bearer token only) queues every SR and SC for the destinations.

    Answers as /api/analyze, and: 413 for an archive over a limit (entries, total or
    per-entry uncompressed size, compression ratio); 415 not a ZIP; 422 a damaged
    archive, unsafe entry names (`../`, absolute) or no DICOM file in it. A DICOM entry the
    admission refuses is left out with its reason; when it refused every one, the answer is
    its `file_refused` (413 or 422, as /api/analyze)."""
    language = _api_language(request)
    kind = ""
    try:
        classifier = service.classifier()
        upload, fields = await receive_file(request, max_upload_mb=service.api.max_upload_mb)
        try:
            head = await upload.read(8)
            if not head:
                raise AnalysisError(400, "empty_file")
            if sniff(head) != UploadKind.ZIP:
                raise AnalysisError(415, "not_zip")
            kind = str(UploadKind.ZIP)
            send = _wants_send(request, fields)
            if send:
                service.check_send(request, UploadKind.ZIP, study=True)
            upload_id, directory = service.store.create()
            archive = directory / "upload.zip"
            await upload.seek(0)
            try:
                await run_in_threadpool(copy_upload, upload, archive)
            except BaseException:
                service.store.remove(directory)
                raise
        finally:
            await upload.close()

        result = await run_in_threadpool(
            service.run,
            lambda: analyze_study(archive, classifier=classifier,
                                  uid_root=service.uid_root,
                                  directory=directory, limits=service.limits,
                                  max_dataset_bytes=service.max_dataset_bytes,
                                  language=service.ctx.settings.outputs.language),
            directory=directory, send=send,
        )  # fmt: skip
    except AnalysisError as exc:
        service.access.upload_refused(request, code=exc.code, status=exc.status, kind=kind)
        return _error(exc, language)
    except Exception as exc:  # a bug, not the client's fault: still the documented JSON
        service.access.upload_refused(request, code=type(exc).__name__, status=500, kind=kind,
                                      internal=True)  # fmt: skip
        return _internal_error(exc, language)
    service.access.uploaded(request, result=result, upload_id=upload_id, sent=send)
    log.info("study upload analysed", studies=len(result["studies"]),
             **result["counts"], processing_ms=result["processing_ms"], sent=send)  # fmt: skip
    return JSONResponse(present(result, upload_id, language),
                        headers={"Content-Language": language})  # fmt: skip


@router.post("/api/preview")
async def preview(request: Request, service: Annotated[Analysis, Depends(analysis)]) -> Response:
    """A PNG of an uploaded file's pixels as the node displays them (`uploads.preview`), for
    the Analyze page to show a DICOM or TIFF file before the analysis. The same upload limit
    and inflation check as /api/analyze; nothing is kept, and nothing leaves that the client
    did not send (so, like a PNG analysis, no audit event).

    Answers: 200 image/png; 400 no/empty/several files; 413 over `api.max_upload_mb` or over
    `node.max_dataset_mb` once inflated or decoded; 415 a ZIP or not an image; 422 a DICOM
    file the admission refuses or pixels that cannot be shown, with the reason."""
    language = _api_language(request)
    try:
        upload, _ = await receive_file(request, max_upload_mb=service.api.max_upload_mb)
        try:
            data = await upload.read()
        finally:
            await upload.close()
        png = await run_in_threadpool(
            lambda: upload_preview(data, max_dataset_bytes=service.max_dataset_bytes)
        )
    except AnalysisError as exc:
        return _error(exc, language)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/api/analyses/{upload_id}")
def get_analysis(
    upload_id: str, request: Request, service: Annotated[Analysis, Depends(analysis)]
) -> Response:
    """A stored analysis (until `api.upload_retention_hours` after it was made)."""
    language = _api_language(request)
    result = service.store.load_result(upload_id)
    if result is None:
        return _error(AnalysisError(404, "not_found"), language)
    service.access.analysis_read(request, result=result, upload_id=upload_id)
    return JSONResponse(present(result, upload_id, language))


@router.get("/api/analyses/{upload_id}/files/{name}")
def get_analysis_file(
    upload_id: str, name: str, request: Request,
    service: Annotated[Analysis, Depends(analysis)],
) -> Response:  # fmt: skip
    """A result file of an analysis: overlay PNG, SC/SR (DICOM), report (XLSX)."""
    path = service.store.file(upload_id, name)
    result = service.store.load_result(upload_id) if path is not None else None
    if path is None or result is None:
        return _error(AnalysisError(404, "not_found"), _api_language(request))
    service.access.downloaded(request, result=result, upload_id=upload_id, name=name)
    media_type = _MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    inline = media_type == "image/png"
    return FileResponse(path, media_type=media_type, filename=None if inline else name,
                        headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip


__all__ = ["MESSAGES", "include_analysis", "present", "router"]
