"""The SCP negotiates every storage SOP class pydicom's UID dictionary names, retired ones
included (a PACS forwards old studies whole; one refused class fails the forward), and
pynetdicom runs its C-STORE service for each."""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from dicomnode.config import NodeSettings
from dicomnode.ingest.scp import make_ae

#: Named "... Storage" in the dictionary, but not a C-STORE class (checked by hand against
#: PS3.4: DICOMDIR is media only; Storage Commitment is N-ACTION / N-EVENT-REPORT).
NOT_C_STORE = {"MediaStorageDirectoryStorage", "StorageCommitmentPushModel",
               "StorageCommitmentPullModel"}  # fmt: skip
#: Non-Patient Object Storage (PS3.4 GG): no patient or study, never in a forwarded study.
NON_PATIENT = {"HangingProtocolStorage", "ColorPaletteStorage", "GenericImplantTemplateStorage",
               "ImplantAssemblyTemplateStorage", "ImplantTemplateGroupStorage",
               "CTDefinedProcedureProtocolStorage", "XADefinedProcedureProtocolStorage",
               "ProtocolApprovalStorage", "InventoryStorage"}  # fmt: skip


def dictionary_storage_classes() -> dict[str, str]:
    """UID → keyword of every storage SOP class in pydicom's dictionary (the test's own rule:
    by keyword, where the node's goes by name)."""
    return {
        uid: keyword
        for uid, (_name, kind, _info, _retired, keyword) in UID_dictionary.items()
        if kind == "SOP Class" and "Storage" in keyword and keyword not in NOT_C_STORE | NON_PATIENT
    }


def test_every_storage_sop_class_pydicom_knows_is_supported_retired_included():
    ae = make_ae(NodeSettings())
    supported = {str(c.abstract_syntax) for c in ae.supported_contexts}
    wanted = dictionary_storage_classes()
    missing = {uid: kw for uid, kw in wanted.items() if uid not in supported}
    assert missing == {}
    assert {str(c.abstract_syntax) for c in AllStoragePresentationContexts} <= supported
    retired = {uid for uid in wanted if UID_dictionary[uid][3] == "Retired"}
    assert "1.2.840.10008.5.1.4.1.1.6" in retired and len(retired) >= 20
    # Not storage, or not a patient's: not negotiated.
    keywords = {kw: uid for uid, (*_, kw) in UID_dictionary.items()}
    assert not {keywords[kw] for kw in NOT_C_STORE | NON_PATIENT} & supported
    # pynetdicom has a C-STORE service for each (without one it aborts the association).
    for uid in supported - {"1.2.840.10008.1.1"}:
        assert issubclass(uid_to_service_class(uid), StorageServiceClass), uid
