"""Reading the one uploaded file of an analysis request, within `api.max_upload_mb`.

The limit is enforced while the body is read: a larger body answers 413, and the rest of it is
drained (up to `DRAIN_CAP`) so the client reads the answer instead of a reset connection.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from dicomnode.uploads.analysis import AnalysisError

MIB = 1024 * 1024
#: Room for the multipart framing around the file.
FORM_OVERHEAD = MIB
#: An over-limit body is read (and thrown away) up to this much more, so the client gets the
#: 413 instead of a reset connection; beyond it the connection is closed.
DRAIN_CAP = 256 * MIB


@dataclass
class _Body:
    more: bool = True
    received: int = 0


class _TooLarge(Exception):
    pass


async def receive_file(
    request: Request, *, max_upload_mb: float
) -> tuple[UploadFile, dict[str, str]]:
    """The single uploaded file (within the limit) and the other form fields."""
    limit_bytes = int(max_upload_mb * MIB)
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

    too_large = AnalysisError(413, "too_large", limit_mb=f"{max_upload_mb:g}")
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


def copy_upload(upload: UploadFile, target: Path) -> None:
    with open(target, "xb") as out:
        shutil.copyfileobj(upload.file, out, 1 << 20)
