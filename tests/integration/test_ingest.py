"""The fast C-STORE path (whole-PDU reads, no-copy writes, header parsed from the received
buffer) stores what was sent: every element, compressed data as sent, deflated via pydicom."""

from __future__ import annotations

import pydicom
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicomnode.config import Settings
from dicomnode.ingest.admission import StoreContext
from dicomnode.ingest.scp import start_scp
from dicomnode.metrics import Metrics
from dicomnode.store.db import make_engine
from dicomnode.store.jobs import Jobs
from dicomnode.store.spool import Spool
from tests.support import data
from tests.support.peers import free_port, storescu


def test_received_files_hold_every_sent_element_in_the_sent_syntax(tmp_path):
    settings = Settings.model_validate(
        {"node": {"port": free_port(), "data_dir": str(tmp_path / "node"), "min_free_mb": 0}}
    )
    jobs = Jobs(make_engine(settings.database_url))
    spool = Spool(tmp_path / "node" / "spool")
    server = start_scp(settings.node, StoreContext(spool=spool, jobs=jobs, metrics=Metrics(),
                                                   salt="s"))  # fmt: skip
    try:
        large = data.copy_with_new_uids(data.testdata(data.RG3_UNCR), tmp_path / "large.dcm")
        j2k = data.copy_with_new_uids(data.testdata(data.RG1_J2KR), tmp_path / "j2k.dcm")
        small = data.copy_with_new_uids(data.ct_small(), tmp_path / "small.dcm")
        deflated = tmp_path / "deflated.dcm"
        ds = pydicom.dcmread(data.copy_with_new_uids(data.cat_dx(), tmp_path / "cat.dcm"))
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        ds.save_as(deflated, enforce_file_format=True)
        sent = [large, j2k, small, deflated]
        result = storescu(sent, port=settings.node.port, called=settings.node.ae_title)
        assert result.statuses == [0, 0, 0, 0], result.stderr[-2000:]
        same_syntax: list[str] = []
        received = {j.sop_instance_uid: j for j in jobs.list_jobs()}
        assert len(received) == 4
        for path in sent:
            source = pydicom.dcmread(path)
            job = received[source.SOPInstanceUID]
            stored = spool.path(job.spool_path)
            copy = pydicom.dcmread(stored)
            # storescu re-encodes on the way (uncompressed syntax of its choice, explicit
            # sequence lengths, no trailing padding), so the check is element by element
            if copy.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID:
                same_syntax.append(path.name)
            # every element, pixel data included (storescu drops trailing padding FFFC,FFFC)
            wanted = [e for e in source if e.tag != 0xFFFCFFFC]
            assert [e for e in copy if e.tag != 0xFFFCFFFC] == wanted, path.name
            assert job.study_instance_uid == source.StudyInstanceUID
            assert job.modality == source.Modality
        assert {"j2k.dcm", "deflated.dcm"} <= set(same_syntax)  # compressed: as sent
    finally:
        server.shutdown()
