"""A result the node could not deliver reads in Ukrainian on the Ukrainian worklist: the real
worker classifies a radiograph, the real outbox tries a destination that cannot take it (a
closed port, a dcmtk `storescp` that refuses every association, a peer that answers 0xA700)
and gives up, and the page names why in Ukrainian — never the "reason without a translation"
fallback, never the English sentence (which the API keeps, with its code)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dicomnode.deliver.outbox import deliver_due
from dicomnode.http.i18n import MESSAGES
from dicomnode.imaging.reasons import reason_code
from dicomnode.metrics import Metrics
from tests.integration.test_ukrainian_pages import english_words
from tests.support.data import RG3_UNCR, testdata
from tests.support.dcmtk import StoreSCP
from tests.support.inprocess import inprocess_node
from tests.support.peers import StatusSCP
from tests.support.procs import LOCALHOST, free_port

HTML = {"Accept": "text/html"}


@contextmanager
def _closed_port(_tmp: Path) -> Iterator[tuple[str, int]]:
    yield "ANYONE", free_port()  # nothing listens there


@contextmanager
def _refusing_storescp(tmp: Path) -> Iterator[tuple[str, int]]:
    with StoreSCP(tmp / "storescp", aet="REFUSES", extra=("--refuse",)) as scp:
        yield scp.aet, scp.port


@contextmanager
def _out_of_resources(_tmp: Path) -> Iterator[tuple[str, int]]:
    with StatusSCP(aet="FULL", status=0xA700) as scp:
        yield "FULL", scp.port


@pytest.mark.parametrize(
    ("peer", "code", "ukrainian"),
    [
        (_closed_port, "connection_refused", "відмовив у з’єднанні"),
        (_refusing_storescp, "rejected_because", "відхилив асоціацію (відхилено остаточно"),
        (_out_of_resources, "peer_status", "вузол-отримувач відповів 0xA700"),
    ],
    ids=["closed-port", "storescp-refuses", "status-A700"],
)
def test_an_undelivered_result_reads_in_ukrainian_on_the_worklist(
    tmp_path: Path, peer, code: str, ukrainian: str
):
    with peer(tmp_path) as (ae_title, port):
        destination = {"name": "pacs", "ae_title": ae_title, "host": LOCALHOST, "port": port}
        node = inprocess_node(tmp_path / "node", destinations=[destination],
                              delivery={"max_attempts": 1, "timeout_seconds": 5})  # fmt: skip
        assert node.receive(Path(testdata(RG3_UNCR)).read_bytes()) == 0
        node.run_until_idle()
        assert deliver_due(jobs=node.jobs, spool=node.spool, settings=node.settings,
                           metrics=Metrics()) == 0  # fmt: skip
    api = node.api()
    [row] = api.get("/api/worklist").json()["studies"]
    assert row["state"] == "failed"
    english = api.get("/?lang=en", headers=HTML).text
    uk = api.get("/?lang=uk", headers=HTML).text
    [stored] = {d["last_error"] for d in _deliveries(api, row["study_instance_uid"])}
    assert reason_code(stored) == code, stored  # the API keeps the English sentence
    assert stored in html.unescape(english)
    [shown] = re.findall(r'<span class="reason">(.*?)</span>', uk)
    assert ukrainian in html.unescape(shown), shown
    assert MESSAGES["uk"]["reason.unknown"] not in uk
    assert stored not in uk
    assert english_words(html.unescape(shown)) == set(), shown  # the page's data may be English


def _deliveries(api, study_uid: str) -> list[dict]:
    study = api.get(f"/api/studies/{study_uid}").json()
    return [d for result in study["results"] for d in result["deliveries"]]
