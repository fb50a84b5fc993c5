"""The node's own result series in an Orthanc, as a retention run lists and deletes them.

Through the node's one Orthanc client (`dicomnode.pacs.orthanc`), so the deletions carry the
configured credentials and timeout like every other call to that Orthanc.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dicomnode.config import Settings
from dicomnode.objects.series import OWN_SERIES_DESCRIPTIONS
from dicomnode.pacs.orthanc import (
    OrthancApi,
    OrthancError,
    OrthancUnavailable,
    api_from_settings,
    peer_name,
)
from dicomnode.retention.policy import OrthancSeries


class OrthancResultSeries:
    """`OrthancResults` of a retention run; a client per call (runs are rare and short)."""

    def __init__(self, *, connect: Callable[[], OrthancApi], peer: str) -> None:
        self.connect = connect
        self.peer = peer  # "orthanc host:port": no credentials

    @classmethod
    def from_settings(cls, settings: Settings) -> OrthancResultSeries | None:
        """From `retention.results_orthanc_url`; None when it is not set."""
        url = settings.retention.results_orthanc_url
        if not url:
            return None
        return cls(connect=lambda: api_from_settings(settings, url=url), peer=peer_name(url))

    def own_series(self) -> list[OrthancSeries]:
        found: list[OrthancSeries] = []
        try:
            with self.connect() as api:
                for description in sorted(OWN_SERIES_DESCRIPTIONS):
                    query = {"SeriesDescription": description}
                    found += [_series(item) for item in api.find_series(query)]
        except (OrthancError, OrthancUnavailable) as exc:
            raise OSError(f"Orthanc: {type(exc).__name__}") from exc
        return found

    def delete(self, orthanc_id: str) -> None:
        try:
            with self.connect() as api:
                api.delete_series(orthanc_id)  # already gone is fine
        except (OrthancError, OrthancUnavailable) as exc:
            raise OSError(f"Orthanc: {type(exc).__name__}") from exc


def _series(item: dict[str, Any]) -> OrthancSeries:
    tags = item.get("MainDicomTags", {})
    raw = str(item.get("LastUpdate", ""))
    try:
        last = datetime.strptime(raw, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        last = datetime.now(UTC)  # unknown age: treat as new, never as old
    return OrthancSeries(
        orthanc_id=str(item.get("ID", "")),
        series_instance_uid=str(tags.get("SeriesInstanceUID", "")),
        series_description=str(tags.get("SeriesDescription", "")),
        last_update=last,
    )
