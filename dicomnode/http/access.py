"""The audit trail of the HTTP API: who read patient data, uploaded files for analysis, or took
analysis results away. Events are written through `audit.Audit` (salted hashes, never a raw UID
or patient attribute) with PS3.15 Event IDs:

- DICOM Instances Accessed (110103), action R: one study's data read — `GET /api/studies/{uid}`,
  `GET /api/jobs/{id}`, an SC thumbnail, a stored analysis (`GET /api/analyses/{id}`).
- Query (110112), action E: a list that names studies — the worklist (`GET /api/worklist`, the
  page `/` and its refreshes), `GET /api/jobs`. One event per view with the number of rows as
  count (rows are not listed one by one); the filters, never identifiers, in the detail.
- Import (110107), action C: an upload to `/api/analyze` or `/api/analyze-study`, one event per
  study it held (count: its DICOM files), plus one for archive entries that were not read;
  a refused upload is one event with outcome 8 and the refusal's code (its reason class).
- Export (110106), action R: a result file of an analysis downloaded (overlay PNG, SC/SR,
  XLSX report): patient data leaving the node.
- User Authentication (110114): a refused token on the analysis routes (as `app.py` does for
  the others), a failed or throttled sign-in on `/login`, a cross-origin request refused by
  `guard.BrowserGuard`.

What counts as an identifier read: a response holding a patient attribute (name, ID, birth
date, accession number), a Study/Series/SOP Instance UID, or pixels of a patient's image.
Responses without them (health, metrics, model card, the audit trail itself — hashes only —,
the result of a PNG/JPEG analysis) are not recorded as reads.

Who: `actor` is the API client as every API event names it (`api:` + a hash of its address);
`peer` is its address and port and how it authenticated (bearer token, session cookie, or no
token configured). The API knows one shared token, not persons: the trail tells which
workstation, not which radiologist.

Repeats: the worklist page refreshes itself every few seconds and scripts poll. The same client
reading the same thing again within `REPEAT_SECONDS` is not recorded again unless the answer
names something new (another study in the list, more images in the study); reads, queries and
exports only — every upload is recorded.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import Depends, FastAPI, Request

from dicomnode.audit import Audit, AuditAction, AuditEventID, AuditOutcome
from dicomnode.http.auth import SESSION_COOKIE, TokenAuth
from dicomnode.http.context import ApiContext
from dicomnode.http.upload_audit import ENTRY_REASONS, analysis_studies, file_studies
from dicomnode.uids import hash_uid

if TYPE_CHECKING:
    from dicomnode.store.tables import Job
    from dicomnode.store.worklist import WorklistFilters

#: A client re-reading the same thing within this many seconds is not recorded again.
REPEAT_SECONDS = 300.0
#: How many (client, thing) pairs are remembered for that (least recently used go first).
_REMEMBERED = 4096
_FILE_KINDS = (("overlay", "overlay PNG"), ("sc-", "SC (DICOM)"), ("sr-", "SR (DICOM)"),
               ("report", "XLSX report"))  # fmt: skip


def client_id(request: Request, salt: str) -> str:
    """An API client as the audit trail names it: a hash of its address."""
    host = request.client.host if request.client else "unknown"
    return "api:" + hash_uid(host, salt)[:8]


class AccessAudit:
    """Records the HTTP API's reads, uploads and downloads. Without an `Audit` it does nothing."""

    def __init__(
        self,
        audit: Audit | None,
        *,
        salt: str,
        token: str,
        repeat_seconds: float = REPEAT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audit = audit
        self.salt = salt
        self._bearer = TokenAuth(token)
        self.repeat_seconds = repeat_seconds
        self._clock = clock
        self._seen: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def of(cls, app: FastAPI, ctx: ApiContext) -> AccessAudit:
        """The app's one AccessAudit (so repeats are recognised across its routes)."""
        found = getattr(app.state, "access_audit", None)
        if found is None:
            found = cls(ctx.audit, salt=ctx.settings.node.log_salt, token=ctx.settings.api.token)
            app.state.access_audit = found
        return found

    # --- who ------------------------------------------------------------------------------------

    def credential(self, request: Request) -> str:
        """How the request authenticated (for a refused one: what it tried)."""
        if not self._bearer.enabled:
            return "no token configured"
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return "bearer token" if self._bearer.check_token(given.strip()) else "wrong token"
        return "session cookie" if request.cookies.get(SESSION_COOKIE) else "no credential"

    def who(self, request: Request) -> tuple[str, str]:
        """(actor, peer) of an event: the client's hashed id; its address and credential."""
        client = request.client
        address = f"{client.host}:{client.port}" if client else "unknown"
        return client_id(request, self.salt), f"{address} ({self.credential(request)})"

    # --- repeats --------------------------------------------------------------------------------

    def _new(self, request: Request, key: Sequence[Hashable], shows: Iterable[object]) -> bool:
        """True if this client has not read `key` within the repeat window, or the answer now
        shows something it did not (`shows`: what identifies the answer's content)."""
        parts = (client_id(request, self.salt), self.credential(request), *key)
        name = _digest(parts)
        content = _digest(sorted(str(s) for s in shows))
        now = self._clock()
        with self._lock:
            last = self._seen.get(name)
            if last is not None and last[1] == content and now - last[0] < self.repeat_seconds:
                self._seen.move_to_end(name)
                return False
            self._seen[name] = (now, content)
            self._seen.move_to_end(name)
            while len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)
            return True

    # --- reads ----------------------------------------------------------------------------------

    def read(
        self,
        request: Request,
        *,
        study_uid: str | None,
        what: str,
        object: str = "",
        instance_uid: str | None = None,
        count: int = 1,
        key: Sequence[Hashable],
        shows: Iterable[object] = (),
    ) -> None:
        """One study's data read (DICOM Instances Accessed, R); `what` says which (no data).
        The object is `object` (already without identifiers), else the instance or the study,
        hashed."""
        if self.audit is None or not self._new(request, ("read", *key), shows):
            return
        if instance_uid:
            default = f"instance:{self.audit.hash(instance_uid)}"
        else:
            default = f"study:{self.audit.hash(study_uid)}" if study_uid else ""
        self._save(request, [{
            "event": AuditEventID.INSTANCES_ACCESSED, "action": AuditAction.READ,
            "study_uid": study_uid, "object": object or default, "count": count, "detail": what,
        }])  # fmt: skip

    def query(
        self,
        request: Request,
        *,
        what: str,
        rows: Sequence[str],
        key: Sequence[Hashable],
        study_uid: str | None = None,
        detail: str = "",
    ) -> None:
        """A list naming studies (Query, E): one event, the number of rows as count. `rows`
        identify the rows (to recognise a repeat), `study_uid` is the study filter if any."""
        if self.audit is None or not self._new(request, ("query", what, *key), rows):
            return
        self._save(request, [{
            "event": AuditEventID.QUERY, "action": AuditAction.EXECUTE, "study_uid": study_uid,
            "count": len(rows),
            "detail": f"{what}: {len(rows)} rows" + (f"; {detail}" if detail else ""),
        }])  # fmt: skip

    def worklist(
        self,
        request: Request,
        *,
        what: str,
        filters: WorklistFilters,
        studies: Sequence[str],
        identifiers: bool,
    ) -> None:
        """A worklist view (the page, its refresh, or /api/worklist): one Query event."""
        self.query(request, what=what, rows=studies, key=("worklist", repr(filters)),
                   detail=worklist_filters(filters, identifiers=identifiers))  # fmt: skip

    def jobs_listed(
        self,
        request: Request,
        jobs: Sequence[Job],
        *,
        state: str | None,
        study_uid: str | None,
        limit: int,
        offset: int,
    ) -> None:
        """GET /api/jobs (rows name studies and instances): one Query event."""
        parts = [f"state={state}"] if state else []
        parts += ["study filter"] if study_uid else []
        parts.append(f"limit={limit} offset={offset}")
        self.query(request, what="GET /api/jobs", rows=[f"job:{j.id}" for j in jobs],
                   key=(state, study_uid, limit, offset), study_uid=study_uid,
                   detail=" ".join(parts))  # fmt: skip

    # --- analysis uploads and downloads ---------------------------------------------------------

    def uploaded(
        self, request: Request, *, result: dict[str, Any], upload_id: str, sent: bool
    ) -> None:
        """An analysed upload (Import, C): one event per study, one for unread entries."""
        if self.audit is None:
            return
        common = {"event": AuditEventID.IMPORT, "action": AuditAction.CREATE,
                  "object": f"upload:{upload_id[:8]}"}  # fmt: skip
        queued = ", results queued for the destinations" if sent else ""
        events: list[dict[str, Any]] = []
        if result.get("type") == "study":
            for study in result.get("studies", []):
                n = int(study.get("images", 0))
                events.append({**common, "study_uid": study.get("study_instance_uid"),
                               "count": n, "detail": f"HTTP analysis upload (zip): {n} DICOM "
                               f"files, {study.get('classified', 0)} classified, "
                               f"{study.get('skipped', 0)} skipped, {study.get('failed', 0)} "
                               f"failed{queued}"})  # fmt: skip
            unread = Counter(
                item.get("reason") if item.get("reason") in ENTRY_REASONS else "other"
                for item in result.get("images", [])
                if "entry" in item and "metadata" not in item
            )
            if unread:
                reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(unread.items()))
                events.append({**common, "outcome": AuditOutcome.MINOR_FAILURE,
                               "count": sum(unread.values()),
                               "detail": f"HTTP analysis upload (zip): entries not read: "
                               f"{reasons}"})  # fmt: skip
        else:
            study_uid = (result.get("dicom") or {}).get("study_instance_uid")
            kind = str(result.get("kind", ""))
            events.append({**common, "study_uid": study_uid, "count": 1,
                           "detail": f"HTTP analysis upload ({kind}): 1 image classified"
                           f"{queued}"})  # fmt: skip
        self._save(request, events)

    def upload_refused(
        self,
        request: Request,
        *,
        code: str,
        status: int,
        kind: str = "",
        study_uid: str | None = None,
        internal: bool = False,
    ) -> None:
        """An upload not analysed (Import, outcome 8; 12 for an error of the node's own)."""
        if self.audit is None:
            return
        outcome = AuditOutcome.MAJOR_FAILURE if internal else AuditOutcome.SERIOUS_FAILURE
        verb = "failed" if internal else "refused"
        of_kind = f" ({kind})" if kind else ""
        self._save(request, [{
            "event": AuditEventID.IMPORT, "action": AuditAction.CREATE, "outcome": outcome,
            "study_uid": study_uid, "count": 1,
            "detail": f"HTTP analysis upload{of_kind} {verb}: {code} (HTTP {status})",
        }])  # fmt: skip

    def analysis_read(self, request: Request, *, result: dict[str, Any], upload_id: str) -> None:
        """A stored analysis read back: a read of each study it names (none for PNG/JPEG)."""
        for study_uid, images in analysis_studies(result).items():
            self.read(request, study_uid=study_uid, what="GET /api/analyses/{id}",
                      object=f"upload:{upload_id[:8]}", count=images,
                      key=("analysis", upload_id, study_uid))  # fmt: skip

    def downloaded(
        self, request: Request, *, result: dict[str, Any], upload_id: str, name: str
    ) -> None:
        """A result file of an analysis downloaded (Export, R), once per study it holds."""
        if self.audit is None or not self._new(request, ("export", upload_id, name), ()):
            return
        kind = next((label for prefix, label in _FILE_KINDS if name.startswith(prefix)), "file")
        studies: list[str | None] = [*file_studies(result, name)] or [None]
        self._save(request, [
            {"event": AuditEventID.EXPORT, "action": AuditAction.READ, "study_uid": study_uid,
             "object": f"upload:{upload_id[:8]}", "count": 1,
             "detail": f"analysis result downloaded: {kind}"}
            for study_uid in studies
        ])  # fmt: skip

    def refused(self, request: Request, *, why: str = "bearer token refused") -> None:
        """A refused token, sign-in or cross-origin request (User Authentication, outcome 4),
        as app.py records a refused token; `why` holds no identifier nor submitted text."""
        if self.audit is None:
            return
        self._save(request, [{
            "event": AuditEventID.USER_AUTHENTICATION, "action": AuditAction.EXECUTE,
            "outcome": AuditOutcome.MINOR_FAILURE,
            "detail": f"{why}: {request.method} {request.url.path}",
        }])  # fmt: skip

    def _save(self, request: Request, events: list[dict[str, Any]]) -> None:
        """Write events (fields of `Audit.make`) as this request's client, in one commit."""
        assert self.audit is not None
        actor, peer = self.who(request)
        self.audit.save([self.audit.make(actor=actor, peer=peer, **e) for e in events])


# --- pure helpers ---------------------------------------------------------------------------


def _digest(parts: Iterable[object]) -> str:
    """A key for the repeat memory: hashed, so the memory holds no identifier in clear."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]


def worklist_filters(filters: WorklistFilters, *, identifiers: bool) -> str:
    """The filters of a worklist view as text (validated values: codes, dates, numbers)."""
    parts = []
    if filters.outcomes:
        parts.append("outcome=" + ",".join(o.value for o in filters.outcomes))
    if filters.states:
        parts.append("state=" + ",".join(s.value for s in filters.states))
    if filters.modality:
        parts.append(f"modality={filters.modality}")
    if filters.date_from or filters.date_to:
        parts.append(f"study date {filters.date_from or ''}..{filters.date_to or ''}")
    if filters.model_version:
        parts.append("served model only")
    if filters.sort != "triage" or filters.descending:
        parts.append(f"sort={filters.sort.value}{' desc' if filters.descending else ''}")
    parts.append(f"limit={filters.limit} offset={filters.offset}")
    parts.append("patient identifiers shown" if identifiers else "patient identifiers hidden")
    return " ".join(parts)


def get_access(request: Request) -> AccessAudit:
    """FastAPI dependency: the app's AccessAudit (made by `create_app`)."""
    return cast(AccessAudit, request.app.state.access_audit)


Access = Annotated[AccessAudit, Depends(get_access)]
