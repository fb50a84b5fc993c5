"""The SCU keeps a C-STORE response that pynetdicom's reactor takes by mistake (its pause flag
can be stale for one loop: pydicom/pynetdicom#875) for the sender waiting for it."""

from __future__ import annotations

from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from dicomnode.deliver.scu import keep_responses
from tests.support.peers import free_port


def test_a_response_taken_by_the_reactor_goes_back_to_the_waiting_sender():
    port = free_port()
    scp = AE(ae_title="PEER")
    scp.add_supported_context(SecondaryCaptureImageStorage)
    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])  # fmt: skip
    try:
        ae = AE(ae_title="NODE")
        ae.add_requested_context(SecondaryCaptureImageStorage)
        assoc = ae.associate("127.0.0.1", port, ae_title="PEER")
        assert assoc.is_established
        keep_responses(assoc)
        # Keep the reactor from serving the queue itself while the test looks at it.
        assoc._reactor_checkpoint.clear()
        response = C_STORE()
        response.MessageIDBeingRespondedTo = 1
        response.AffectedSOPClassUID = SecondaryCaptureImageStorage
        response.AffectedSOPInstanceUID = "1.2.3.4"
        response.Status = 0x0000
        assert response.is_valid_response and not response.is_valid_request
        # What the reactor does when it wins the race:
        assoc._serve_request(response, 1)
        assert assoc.dimse.msg_queue.get_nowait() == (1, response)  # given back
        assoc._serve_request(response, 1)  # taken again (nobody waiting): dropped, no loop
        assert assoc.dimse.msg_queue.empty()
        assoc._reactor_checkpoint.set()
        assoc.release()
    finally:
        server.shutdown()
