"""Reading a STOW-RS body part by part: memory stays bounded by the dataset limit however large
a part is, and the media type and boundary rules of PS3.18 / RFC 2046 hold."""

from __future__ import annotations

import pytest

from dicomnode.http.stow_parts import (
    NAMING_PREFIX,
    BrokenBody,
    PartReader,
    UnsupportedMediaType,
    boundary_of,
)

LIMIT = 1024 * 1024
CHUNK = 64 * 1024


def test_a_part_larger_than_the_limit_never_holds_more_than_the_limit() -> None:
    reader = PartReader(b"bnd", max_part_bytes=LIMIT)
    body = [b"--bnd\r\nContent-Type: application/dicom\r\n\r\n"]
    body += [b"x" * CHUNK] * (20 * LIMIT // CHUNK)  # a 20 MiB part
    body += [b"\r\n--bnd\r\n\r\nsmall\r\n--bnd--\r\n"]
    done = []
    for chunk in body:
        done += reader.feed(chunk)
        held = reader._part.data if reader._part is not None else b""
        assert len(held) <= LIMIT + CHUNK
    reader.finish()
    big, small = done
    assert big.too_large and big.size == 20 * LIMIT and len(big.data) == NAMING_PREFIX
    assert not small.too_large and bytes(small.data) == b"small"
    assert small.media_type == "application/dicom"  # no Content-Type: the request's type


@pytest.mark.parametrize(
    ("content_type", "error"),
    [
        ("application/dicom", UnsupportedMediaType),
        ('multipart/related; type="application/dicom+xml"; boundary=a', UnsupportedMediaType),
        ("multipart/related; boundary=a", UnsupportedMediaType),  # type is required
        ('multipart/related; type="application/dicom"', BrokenBody),
        ('multipart/related; type="application/dicom"; boundary=' + "a" * 201, BrokenBody),
    ],
)
def test_request_media_types(content_type: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        boundary_of(content_type)


def test_orthancs_long_boundary_and_a_quoted_one_are_accepted() -> None:
    long = "169a4d5b-47ee-49e3-8381-031699863916-169a4d5b-47ee-49e3-8381-031699863916"
    assert boundary_of(f'multipart/related; type="application/dicom"; boundary={long}') == (
        long.encode()
    )
    assert boundary_of('Multipart/Related; boundary="x y"; type=application/dicom') == b"x y"


def test_a_truncated_body_or_oversized_part_headers_are_broken() -> None:
    reader = PartReader(b"bnd", max_part_bytes=LIMIT)
    reader.feed(b"--bnd\r\nContent-Type: application/dicom\r\n\r\npartial")
    with pytest.raises(BrokenBody):
        reader.finish()
    with pytest.raises(BrokenBody):
        PartReader(b"bnd", max_part_bytes=LIMIT).feed(b"--bnd\r\nX: " + b"h" * 20000)
