"""The base of the node's SQL classes: one engine, one short session per call.

`Queue`, `StudyReports` and `Deliveries` each own their tables' SQL; `Jobs` composes them over
one engine. Thread-safe: no session outlives a call.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlmodel import Session


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # PostgreSQL claims with FOR UPDATE SKIP LOCKED and inserts with its own dialect.
        self._postgres = engine.dialect.name == "postgresql"

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def ping(self) -> None:
        with self.session() as s:
            s.execute(select(1)).one()
