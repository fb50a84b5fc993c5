"""The parts of a STOW-RS body (multipart/related; type="application/dicom"), read as they
arrive so that no more than one part (at most the node's dataset limit) is held in memory.

python-multipart does the parsing (boundaries, part headers); this module only decides what a
part is: its media type, its bytes, or that it was too large to keep (then only its first bytes
are kept, which hold the header that names the instance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from io import BytesIO

from pydicom import dcmread
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.uid import UID
from python_multipart.multipart import MultipartParser, parse_options_header

from dicomnode.imaging.dicom_errors import RECEIVED_ERRORS
from dicomnode.ingest.admission import looks_like_uid

#: The only part media type of the supported request (PS3.18 10.5.1.2: instances as files).
DICOM = "application/dicom"
#: Longest boundary accepted (RFC 2046: 70; senders exceed it).
MAX_BOUNDARY = 200
#: Part headers larger than this make the body malformed (400).
MAX_PART_HEADERS = 16 * 1024
#: How much of a part too large to keep is kept: enough for its header (the pixels come last).
NAMING_PREFIX = 64 * 1024


class BrokenBody(ValueError):
    """The body is not a multipart message with the declared boundary (HTTP 400)."""


class UnsupportedMediaType(ValueError):
    """The request is not multipart/related; type="application/dicom" (HTTP 415)."""


def boundary_of(content_type: str) -> bytes:
    """The boundary of a STOW-RS request's Content-Type; raises UnsupportedMediaType for
    anything but multipart/related with type application/dicom, BrokenBody without a boundary."""
    media, options = parse_options_header(content_type)
    kind = options.get(b"type", b"").decode("latin-1").strip().lower()
    if media.decode("latin-1").strip().lower() != "multipart/related":
        raise UnsupportedMediaType("the request must be multipart/related")
    if kind != DICOM:
        raise UnsupportedMediaType('only multipart/related; type="application/dicom" is stored')
    boundary = options.get(b"boundary", b"")
    # RFC 2046 says 1-70 characters; Orthanc's DICOMweb plugin sends 73: tolerated, bounded.
    if not boundary or len(boundary) > MAX_BOUNDARY:
        raise BrokenBody("multipart/related without a valid boundary")
    return boundary


@dataclass
class Part:
    """One part: its media type and bytes; `too_large` parts keep only their first bytes."""

    media_type: str = ""
    data: bytearray = field(default_factory=bytearray)
    size: int = 0
    too_large: bool = False

    def naming_uids(self) -> tuple[str, str]:
        """SOP Class and Instance UIDs read from the bytes kept ("" where unreadable), to name
        an instance that was refused before admission (too large)."""
        return _uids_at_start(bytes(self.data))


class PartReader:
    """Feed the body chunk by chunk; completed parts come out of `feed`. Raises BrokenBody."""

    def __init__(self, boundary: bytes, *, max_part_bytes: int) -> None:
        self.max_part_bytes = max_part_bytes  # 0: no limit
        self.ended = False
        self._done: list[Part] = []
        self._part: Part | None = None
        self._field = bytearray()
        self._value = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
            "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_end": self._finished,
        })  # fmt: skip

    def feed(self, chunk: bytes) -> list[Part]:
        if self.ended:
            return []  # the epilogue after the closing boundary is ignored (RFC 2046)
        try:
            self._parser.write(chunk)
        except ValueError as exc:  # python-multipart's MultipartParseError is a ValueError
            raise BrokenBody(f"malformed multipart body ({exc})") from None
        done, self._done = self._done, []
        return done

    def finish(self) -> None:
        """The body has ended: it must have ended with the closing boundary."""
        if not self.ended:
            raise BrokenBody("multipart body ended before its closing boundary")

    # -- python-multipart callbacks

    def _begin(self) -> None:
        self._part = Part()
        self._headers = {}
        self._header_bytes = 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._value += data[start:end]

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_PART_HEADERS:
            raise BrokenBody("part headers too large")

    def _header_end(self) -> None:
        name = self._field.decode("latin-1").strip().lower()
        self._headers[name] = self._value.decode("latin-1").strip()
        self._field.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        assert self._part is not None
        media, _ = parse_options_header(self._headers.get("content-type", DICOM))
        self._part.media_type = media.decode("latin-1").strip().lower()

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        part.size += end - start
        if part.too_large:
            return
        if self.max_part_bytes and part.size > self.max_part_bytes:
            part.too_large = True
            part.data += data[start:end]
            del part.data[NAMING_PREFIX:]  # the memory of the part is given back at once
            return
        part.data += data[start:end]

    def _end(self) -> None:
        assert self._part is not None
        self._done.append(self._part)
        self._part = None

    def _finished(self) -> None:
        self.ended = True


def _uids_at_start(prefix: bytes) -> tuple[str, str]:
    fp = BytesIO(prefix)
    try:
        read_preamble(fp, False)
        if UID(str(_read_file_meta_info(fp).get("TransferSyntaxUID", ""))).is_deflated:
            return "", ""  # not inflated here: naming it is not worth a decompression
        fp.seek(0)
        ds = dcmread(fp, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
        uids = (str(ds.get("SOPClassUID", "")), str(ds.get("SOPInstanceUID", "")))
    except (*RECEIVED_ERRORS, AttributeError, KeyError):
        return "", ""
    return uids[0] if looks_like_uid(uids[0]) else "", uids[1] if looks_like_uid(uids[1]) else ""
