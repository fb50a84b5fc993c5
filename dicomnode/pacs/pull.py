"""The pull path: the router plugin in pull mode says "study X is ready"; the node fetches the
study's instances (`GET /instances/{id}/file`) and ingests each through `scp.store_bytes`,
exactly the path a C-STORE takes (spool, job, dedup, status policy).

The instances to fetch wait in a persistent queue (`dicomnode.pacs.queue`) worked by a loop
that the composition root starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from dicomnode import MANUFACTURER
from dicomnode.config import Settings
from dicomnode.ingest.admission import StoreContext, StoreStatus, audit_received, store_bytes
from dicomnode.pacs.orthanc import InstanceTooLarge, OrthancApi, OrthancError, OrthancUnavailable
from dicomnode.pacs.queue import WorkQueue, work_queue
from dicomnode.uids import hash_uid

log = structlog.stdlib.get_logger("dicomnode.orthanc")

#: Calling AE title recorded on jobs ingested by pulling from Orthanc.
PULL_CALLING_AE = "ORTHANC-PULL"

_ORTHANC_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


def is_orthanc_id(value: str) -> bool:
    return bool(_ORTHANC_ID.match(value))


def radiograph_instances(series: list[dict[str, Any]], modalities: list[str]) -> list[str]:
    """Instance ids of the series to pull: wanted modality, not the node's own output."""
    chosen: list[str] = []
    for item in series:
        tags = item.get("MainDicomTags", {})
        if str(tags.get("Manufacturer", "")).strip().casefold() == MANUFACTURER.casefold():
            continue
        if str(tags.get("Modality", "")).strip().upper() in modalities:
            chosen += [str(i) for i in item.get("Instances", [])]
    return chosen


class OrthancPull:
    """Fetch instances from Orthanc by REST and ingest them like received C-STOREs."""

    def __init__(self, *, settings: Settings, store: StoreContext, api: OrthancApi,
                 wake: Callable[[], None] = lambda: None) -> None:  # fmt: skip
        self.settings = settings
        self.store = store
        self.api = api
        self.wake = wake
        self.salt = settings.node.log_salt
        self.queue = work_queue(settings, "orthanc-pull.json")

    def request(self, orthanc_study_id: str, instances: list[str] | None) -> int:
        """Queue a study's instances (the given ones, or its radiograph series); returns how
        many were queued. Raises ValueError (bad ids), LookupError (no such study),
        OrthancUnavailable/OrthancError (listing the study failed)."""
        if not is_orthanc_id(orthanc_study_id):
            raise ValueError("not an Orthanc study id")
        if instances is None:
            try:
                series = self.api.study_series(orthanc_study_id)
            except OrthancError as exc:
                if exc.status == 404:
                    raise LookupError("Orthanc has no such study") from None
                raise
            instances = radiograph_instances(series, self.settings.orthanc.modalities)
        bad = [i for i in instances if not is_orthanc_id(i)]
        if bad:
            raise ValueError(f"{len(bad)} instance id(s) are not Orthanc ids")
        queued = self.queue.add(instances)
        log.info("pull from Orthanc requested", study=hash_uid(orthanc_study_id, self.salt),
                 instances=len(instances), queued=queued)  # fmt: skip
        self.wake()
        return queued

    def step(self) -> bool:
        instance_id = self.queue.due()
        if instance_id is None:
            return False
        bound = log.bind(instance=hash_uid(instance_id, self.salt))
        try:
            with _drop_if_gone(self.queue, instance_id, bound):
                sop_uid = self.api.instance_sop_uid(instance_id)
                if sop_uid and self.store.jobs.exists(sop_uid):
                    self.queue.done(instance_id)  # already here (C-STORE or an earlier pull)
                    return True
                data = self.api.instance_file(instance_id,
                                              max_bytes=self.store.max_dataset_bytes)  # fmt: skip
        except InstanceTooLarge:
            # Refused for good, like a C-STORE over the limit; not retried (it would not fit).
            # Audited before it leaves the queue: a crash in between audits it twice, never not.
            reason = "dataset larger than max_dataset_mb"
            bound.warning("pulled instance refused", status="0xA700", reason=reason)
            audit_received(self.store, calling=PULL_CALLING_AE, study_uid=None,
                           status=StoreStatus.OUT_OF_RESOURCES, reason=reason,
                           association=None)  # fmt: skip
            self.queue.done(instance_id)
            return True
        except (OrthancError, OrthancUnavailable) as exc:
            attempts, delay = self.queue.failed(instance_id)
            bound.warning("fetching from Orthanc failed; will retry", reason=str(exc),
                          attempts=attempts, retry_in=delay)  # fmt: skip
            return True
        if instance_id not in self.queue:
            return True
        status, reason = store_bytes(self.store, data, calling=PULL_CALLING_AE)
        if status == StoreStatus.SUCCESS:
            self.queue.done(instance_id)
            bound.debug("pulled instance ingested", detail=reason)
        elif status == StoreStatus.OUT_OF_RESOURCES:
            attempts, delay = self.queue.failed(instance_id)
            bound.warning("pulled instance not stored; will retry", reason=reason,
                          attempts=attempts, retry_in=delay)  # fmt: skip
        else:
            self.queue.done(instance_id)
            bound.warning("pulled instance refused", status=f"0x{int(status):04X}",
                          reason=reason)  # fmt: skip
        return True


@contextmanager
def _drop_if_gone(queue: WorkQueue, key: str, bound: Any) -> Iterator[None]:
    """A 404 means the instance was deleted from Orthanc: nothing to retry."""
    try:
        yield
    except OrthancError as exc:
        if exc.status != 404:
            raise
        queue.done(key)
        bound.warning("instance no longer in Orthanc; dropped")
