"""Which SQLite commits are fsynced: those of transactions begun inside `durable()`.

`db` reads the flag when a transaction begins (see its docstring for what each level
guarantees); a module apart so that table modules (audit, retention) can use it without
importing `db`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_durable: ContextVar[bool] = ContextVar("dicomnode_durable_commit", default=False)


@contextmanager
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
