"""The SCP's supported contexts are copied per association cheaply, and truly copied."""

import copy

from dicomnode.config import NodeSettings
from dicomnode.ingest.scp import _SupportedContexts, make_ae


def test_per_association_copy_is_equal_and_independent():
    server_contexts = _SupportedContexts(make_ae(NodeSettings()).supported_contexts)
    copied = copy.deepcopy(server_contexts)
    assert [(c.abstract_syntax, c.transfer_syntax, c.as_scp) for c in copied] == [
        (c.abstract_syntax, c.transfer_syntax, c.as_scp) for c in server_contexts
    ]
    first = copied[0]
    first.result = 0x00
    first.context_id = 5
    first._transfer_syntax.clear()  # what negotiation may do to its copy
    original = server_contexts[0]
    assert original.result is None and original.context_id is None
    assert original.transfer_syntax, "the server's own list must not change"
    assert first is not original and type(copied) is list
