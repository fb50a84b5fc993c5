"""What pydicom raises when it cannot read something: the one definition, by how much was read.

pydicom has no common base exception: a damaged file or element surfaces as whichever built-in
error the parser hit. Three nested tuples, each a documented superset of the one before:

- `VALUE_ERRORS`: reading one value of a dataset already parsed (a wrong VR, a malformed
  number, a missing element): the header is fine, the value counts as absent.
- `READ_ERRORS`: reading a file or a buffer as DICOM, or its pixel data: also not DICOM at all,
  truncated (EOFError), the file itself (OSError; callers that wait on a full disk or a missing
  file catch those subclasses first) and a syntax pydicom cannot decode (NotImplementedError).
- `RECEIVED_ERRORS`: decoding a dataset as a peer sent it over the network, where a hostile or
  broken sender must get a DICOM failure status, never crash the handler: also too large or
  too deeply nested (MemoryError, RecursionError) and a broken deflated stream (zlib.error).
"""

from __future__ import annotations

import zlib

from pydicom.errors import InvalidDicomError

VALUE_ERRORS = (
    ValueError, TypeError, AttributeError, KeyError, IndexError, OverflowError,
)  # fmt: skip
READ_ERRORS = (
    InvalidDicomError, EOFError, OSError, NotImplementedError, *VALUE_ERRORS,
)  # fmt: skip
RECEIVED_ERRORS = (
    *READ_ERRORS, MemoryError, RecursionError, zlib.error,
)  # fmt: skip

__all__ = ["READ_ERRORS", "RECEIVED_ERRORS", "VALUE_ERRORS"]
