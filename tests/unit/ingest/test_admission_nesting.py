"""Sequence nesting is counted on the header as read from the wire, without converting the
other elements, whatever the transfer syntax and whether the sequence's tag is known."""

from io import BytesIO

import pytest
from pydicom import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence

from dicomnode.ingest.limits import MAX_SEQUENCE_DEPTH, _nesting_depth


def _nested(depth: int, *, private: bool) -> Dataset:
    ds = Dataset()
    ds.PatientName = "Nest^Test"
    ds.Rows = 8
    inner = ds
    for _ in range(depth):
        item = Dataset()
        item.CodeValue = "1"
        if private:
            inner.add_new(0x00091010, "SQ", Sequence([item]))
        else:
            inner.ReferencedSeriesSequence = Sequence([item])
        inner = item
    return ds


def _as_received(ds: Dataset, *, implicit: bool) -> Dataset:
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = implicit, True
    write_dataset(buffer, ds)
    return read_dataset(BytesIO(buffer.getvalue()), implicit, True)


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
@pytest.mark.parametrize("private", [False, True], ids=["standard", "private"])
@pytest.mark.parametrize("depth", [0, 3, MAX_SEQUENCE_DEPTH + 2])
def test_depth_is_counted_on_raw_elements(implicit, private, depth):
    received = _as_received(_nested(depth, private=private), implicit=implicit)
    if private and implicit and depth:
        # Unknown private tag, defined length, implicit VR: pydicom reads the value as bytes
        # (UN), never as nested items, so it cannot recurse into it.
        assert received[0x00091010].VR == "UN"
        depth = min(depth, 0)
    if depth > MAX_SEQUENCE_DEPTH:
        assert _nesting_depth(received) > MAX_SEQUENCE_DEPTH
    else:
        assert _nesting_depth(received) == depth


def test_plain_elements_stay_unconverted():
    received = _as_received(_nested(2, private=False), implicit=True)
    _nesting_depth(received)
    raw = received.get_item(0x00100010)  # PatientName: not a sequence, never converted
    assert type(raw).__name__ == "RawDataElement"
