"""What the analysis routes share within one app: settings, the upload store, auth, the audit
trail and the one-analysis-at-a-time lock. Made once by `analyze.include_analysis` and kept in
`app.state.analysis`; routes get it with the `analysis` dependency.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request

from dicomnode.config import ApiSettings
from dicomnode.http.access import AccessAudit
from dicomnode.http.auth import TokenAuth
from dicomnode.http.upload_audit import upload_expired_recorder
from dicomnode.uploads.analysis import AnalysisError, UploadKind
from dicomnode.uploads.send import queue_analysis
from dicomnode.uploads.store import UPLOADS_DIR, UploadStore
from dicomnode.uploads.studyzip import ZipLimits

if TYPE_CHECKING:
    from dicomnode.http.context import ApiContext
    from dicomnode.model.classifier import Classifier


@dataclass
class Analysis:
    ctx: ApiContext
    #: Uploads, refusals, reads and downloads go to the audit trail (http/access.py).
    access: AccessAudit
    #: The page posts with its cookie; `send=true` needs the bearer token (header only).
    auth: TokenAuth
    bearer: TokenAuth
    store: UploadStore
    limits: ZipLimits
    expired: Callable[[str, dict[str, Any] | None], None] | None
    one_at_a_time: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_app(cls, app: FastAPI, ctx: ApiContext) -> Analysis:
        token, api = ctx.settings.api.token, ctx.settings.api
        access = AccessAudit.of(app, ctx)
        return cls(
            ctx=ctx,
            access=access,
            auth=TokenAuth(token, cookie_for_any_method=True, on_refused=access.refused),
            bearer=TokenAuth(token),
            store=UploadStore(ctx.settings.node.data_dir / UPLOADS_DIR),
            limits=ZipLimits.from_settings(api),
            expired=upload_expired_recorder(ctx.audit,
                                            retention_hours=api.upload_retention_hours),
        )  # fmt: skip

    @property
    def api(self) -> ApiSettings:
        return self.ctx.settings.api

    @property
    def uid_root(self) -> str:
        return self.ctx.settings.node.uid_root

    @property
    def max_dataset_bytes(self) -> int:
        """The node's configured admission limit (`node.max_dataset_mb`), as C-STORE meets it."""
        return self.ctx.settings.node.max_dataset_bytes

    def classifier(self) -> Classifier:
        """The model; 503 when none is loaded (checked before the upload is read)."""
        if self.ctx.classifier is None:
            raise AnalysisError(503, "model_not_loaded")
        return self.ctx.classifier

    def check_send(self, request: Request, kind: UploadKind, *, study: bool) -> None:
        if not self.bearer.is_authorized(request):
            raise AnalysisError(403, "send_needs_token")
        if kind != UploadKind.DICOM and not study:
            raise AnalysisError(422, "send_needs_dicom")
        if self.ctx.spool is None:
            raise AnalysisError(503, "send_unavailable")
        if not self.ctx.settings.destinations:
            raise AnalysisError(409, "send_no_destinations")

    def run(
        self, analyse: Callable[[], dict[str, Any]], *, directory: Path, send: bool
    ) -> dict[str, Any]:
        """Analyse (one analysis at a time) and keep the result; on any failure, including
        cancellation, the upload's directory is removed so nothing half-made is listed."""
        with self.one_at_a_time:
            self.store.remove_expired(retention_hours=self.api.upload_retention_hours,
                                      on_removed=self.expired)  # fmt: skip
            try:
                result = analyse()
                self._finish(directory, result, send)
            except BaseException:
                self.store.remove(directory)
                raise
            return result

    def _finish(self, directory: Path, result: dict[str, Any], send: bool) -> None:
        if send:
            assert self.ctx.spool is not None
            result["send"] = queue_analysis(
                directory, result, spool=self.ctx.spool, jobs=self.ctx.jobs,
                destinations=self.ctx.settings.destinations,
            )  # fmt: skip
        now = datetime.now(UTC)
        result["created_at"] = now.isoformat()
        hours = self.api.upload_retention_hours
        result["expires_at"] = (now + timedelta(hours=hours)).isoformat() if hours else None
        self.store.save_result(directory, result)


def analysis(request: Request) -> Analysis:
    """Dependency: this app's `Analysis` (see `analyze.include_analysis`)."""
    found: Analysis = request.app.state.analysis
    return found


def authorized(request: Request) -> None:
    """Dependency: the bearer token or the page's session cookie (401 and audited if not)."""
    analysis(request).auth(request)
