"""What survives a crash or a power cut: files written atomically, and durable SQLite commits.

`atomic_write`: the one atomic, durable file write. The bytes go to a temporary file in the
target's file system (same directory by default), are fsynced, renamed over the target (atomic),
and the directory is fsynced so the rename itself survives. A reader never sees half a file; on
any error the temporary file is removed and the target is left as it was. Used by the spool
(received images, results), the model cache, the Orthanc work queues and the doctor's probe.

`durable()`: which SQLite commits are fsynced, those of transactions begun inside it; `db` reads
the flag when a transaction begins (see its docstring for what each level guarantees). A top-level
helper, so that audit (a helper itself) and retention use it without importing `store`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import BinaryIO

_durable: ContextVar[bool] = ContextVar("dicomnode_durable_commit", default=False)


@contextlib.contextmanager
def atomic_write(
    target: Path, *, tmp_dir: Path | None = None, prefix: str = ".", suffix: str = ".part"
) -> Iterator[BinaryIO]:
    """Yield a binary file to write `target`'s new content into (in as many chunks as the
    caller likes); on a clean exit it becomes `target`, durably.

    `tmp_dir`: where the temporary file is made (default: `target`'s directory); it must be on
    the same file system, e.g. a spool's own `tmp/`, whose leftovers it cleans by `prefix`.
    """
    fd, tmp = tempfile.mkstemp(dir=tmp_dir or target.parent, prefix=prefix, suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(directory: Path) -> None:
    """Make the entries of `directory` (a rename, a new file) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def durable() -> Iterator[None]:
    """SQLite transactions begun inside are fsynced at commit (synchronous=FULL); PostgreSQL
    commits are always durable (synchronous_commit is the server's setting)."""
    token = _durable.set(True)
    try:
        yield
    finally:
        _durable.reset(token)


def is_durable() -> bool:
    return _durable.get()
