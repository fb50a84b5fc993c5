"""The "Analyze" page (HTML; the API it calls is `http/analyze.py`; "About the model" is
`http/about.py`).

Signed out, a page answers the worklist's sign-in form with 401.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request, status
from fastapi.responses import Response

from dicomnode.http.analyze_service import Analysis, analysis
from dicomnode.http.analyze_upload import MIB
from dicomnode.http.i18n import LANGUAGES, translator
from dicomnode.http.pages import TEMPLATES, login_page
from dicomnode.http.pages import language as _language
from dicomnode.http.pages import languages as _languages
from dicomnode.http.pages import remember_language as _remember_language

router = APIRouter(include_in_schema=False)

#: Messages the page's script needs.
_SCRIPT_KEYS = (
    "analyze.uploading", "analyze.processing", "analyze.failed", "analyze.refused",
    "analyze.no_preview", "analyze.preview_loading", "analyze.zip_chosen",
    "analyze.network_error", "unit.ms",
    "analyze.fracture_probability", "analyze.normal_probability", "analyze.confidence",
    "analyze.download_sc", "analyze.download_sr", "analyze.download_overlay",
    "analyze.download_report", "analyze.entry", "analyze.state", "analyze.reason",
    "analyze.studies", "analyze.study", "analyze.studies_found", "analyze.not_classified",
    "analyze.study_images", "analyze.images", "outcome.positive", "outcome.doubt",
    "outcome.negative", "state.classified", "state.skipped", "state.failed", "study_date",
    "description", "modality", "body_part", "images", "outcome",
)  # fmt: skip


def _lang_links(request: Request) -> dict[str, str]:
    items = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return {
        code: request.url.path + "?" + urlencode([*items, ("lang", code)]) for code in LANGUAGES
    }


def _page(request: Request, service: Analysis, template: str, **extra: Any) -> Response:
    language = _language(request)
    auth = service.auth
    if not auth.is_authorized(request):  # the sign-in form, answered 401 like the worklist
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return login_page(request, error=False, code=status.HTTP_401_UNAUTHORIZED,
                          next_path=target)  # fmt: skip
    t = translator(language)
    card = service.ctx.card()
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


@router.get("/analyze")
def analyze_page(request: Request, service: Annotated[Analysis, Depends(analysis)]) -> Response:
    api = service.api
    language = _language(request)
    catalog = {key: translator(language)(key) for key in _SCRIPT_KEYS}
    limit = t_format(translator(language)("analyze.limit"), limit_mb=f"{api.max_upload_mb:g}",
                     hours=f"{api.upload_retention_hours:g}")  # fmt: skip
    return _page(request, service, "analyze.html", active="analyze", messages=catalog,
                 limit_text=limit, max_upload_bytes=int(api.max_upload_mb * MIB))  # fmt: skip


def t_format(template: str, **params: str) -> str:
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return template
