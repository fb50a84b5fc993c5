"""The one Orthanc REST client of the node (pyorthanc over httpx), with errors made explicit.

Used by the pull path (`dicomnode.pacs.pull`), the outcome labels (`dicomnode.pacs.outcome`)
and retention's deletion of the node's result series (`dicomnode.retention.orthanc`), so every
call carries the configured credentials and timeout (`[orthanc]`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from pyorthanc import Orthanc as PyOrthanc

from dicomnode.config import Settings


class OrthancError(Exception):
    """Orthanc answered with an HTTP error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class OrthancUnavailable(Exception):
    """Orthanc's REST API could not be reached."""


class InstanceTooLarge(Exception):
    """The instance file is larger than the node accepts (`node.max_dataset_mb`); it was not
    downloaded whole (refused on its Content-Length, or as soon as the body passed the limit)."""


class OrthancApi:
    """The few REST calls the node makes, through pyorthanc, with errors made explicit."""

    def __init__(self, *, url: str, username: str = "", password: str = "",
                 timeout: float = 30.0) -> None:  # fmt: skip
        self.client = PyOrthanc(url, username or None, password or None,
                                return_raw_response=True, timeout=timeout)  # fmt: skip

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OrthancApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> httpx.Response:
        try:
            response = fn(*args, **kwargs)
        except httpx.TransportError as exc:
            raise OrthancUnavailable(f"{type(exc).__name__}: {exc}") from None
        assert isinstance(response, httpx.Response)
        if response.status_code >= 400:
            raise OrthancError(response.status_code, response.text[:300])
        return response

    def version(self) -> str:
        return str(self._call(self.client.get_system).json().get("Version", ""))

    def study_id(self, study_instance_uid: str) -> str | None:
        found = self._call(self.client.post, f"{self.client.url}/tools/lookup",
                           content=study_instance_uid.encode()).json()  # fmt: skip
        ids = [item["ID"] for item in found if item.get("Type") == "Study"]
        return ids[0] if ids else None

    def set_study_metadata(self, study_id: str, name: str, value: str) -> None:
        self._call(self.client.put, f"{self.client.url}/studies/{study_id}/metadata/{name}",
                   content=value.encode())  # fmt: skip

    def study_labels(self, study_id: str) -> list[str]:
        return list(self._call(self.client.get_studies_id_labels, study_id).json())

    def add_study_label(self, study_id: str, label: str) -> None:
        self._call(self.client.put_studies_id_labels_label, study_id, label)

    def remove_study_label(self, study_id: str, label: str) -> None:
        self._call(self.client.delete_studies_id_labels_label, study_id, label)

    def study_series(self, study_id: str) -> list[dict[str, Any]]:
        return list(self._call(self.client.get_studies_id_series, study_id).json())

    def instance_sop_uid(self, instance_id: str) -> str:
        info = self._call(self.client.get_instances_id, instance_id).json()
        return str(info.get("MainDicomTags", {}).get("SOPInstanceUID", ""))

    def find_series(self, query: dict[str, str]) -> list[dict[str, Any]]:
        """Series whose main DICOM tags match `query`, with their details (`/tools/find`)."""
        found = self._call(self.client.post, f"{self.client.url}/tools/find",
                           json={"Level": "Series", "Expand": True, "Query": query})  # fmt: skip
        return list(found.json())

    def delete_series(self, series_id: str) -> None:
        """Delete a series; one already gone (404) is fine."""
        try:
            self._call(self.client.delete, f"{self.client.url}/series/{series_id}")
        except OrthancError as exc:
            if exc.status != 404:
                raise

    def instance_file(self, instance_id: str, *, max_bytes: int = 0) -> bytes:
        """The instance's DICOM file; with `max_bytes`, streamed and refused (InstanceTooLarge)
        once larger, so a huge instance never sits in memory."""
        if not max_bytes:
            return self._call(self.client.get_instances_id_file, instance_id).content
        url = f"{self.client.url}/instances/{instance_id}/file"
        try:
            with self.client.stream("GET", url) as response:
                if response.status_code >= 400:
                    response.read()
                    raise OrthancError(response.status_code, response.text[:300])
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise InstanceTooLarge(f"{int(declared)} bytes announced")
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise InstanceTooLarge(f"more than {max_bytes} bytes received")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.TransportError as exc:
            raise OrthancUnavailable(f"{type(exc).__name__}: {exc}") from None


def api_from_settings(settings: Settings, *, url: str | None = None) -> OrthancApi:
    """The client of the configured Orthanc (`orthanc.url`), or of another `url` of it.

    `url` (retention's `results_orthanc_url`) gets the `[orthanc]` credentials when it is the
    configured Orthanc (same scheme, host and port), so every call to that Orthanc
    authenticates the same way; they are never sent to another host. Credentials written in
    the URL itself (`http://user:password@host:8042`) are used as they are. The timeout is
    always `orthanc.timeout`.
    """
    o = settings.orthanc
    if url is None or (same_server(url, o.url) and not _has_userinfo(url)):
        return OrthancApi(url=url or o.url, username=o.username, password=o.password,
                          timeout=o.timeout)  # fmt: skip
    return OrthancApi(url=url, timeout=o.timeout)


def same_server(a: str, b: str) -> bool:
    """Both URLs name the same server: scheme, host and port (the default port if none)."""
    if not a or not b:
        return False
    x, y = urlsplit(a), urlsplit(b)
    return (x.scheme.lower(), x.hostname, _port(x.scheme, x.port)) == (
        y.scheme.lower(), y.hostname, _port(y.scheme, y.port))  # fmt: skip


def _port(scheme: str, port: int | None) -> int:
    return port or (443 if scheme.lower() == "https" else 80)


def _has_userinfo(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.username or parts.password)


def peer_name(url: str) -> str:
    """How the audit trail names an Orthanc: host and port, never credentials."""
    parts = urlsplit(url)
    return f"orthanc {parts.hostname}:{_port(parts.scheme, parts.port)}"
