"""The namespace authority's statements in the registry database (one row per statement).

Rows are never updated or deleted by the registry: a revocation is a new statement, and a
client that fetched a page once can rely on it staying the same.
"""

from __future__ import annotations

import time

from sqlalchemy import Column, Float, Index, LargeBinary, String, Table, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from trustyard.metadata.authority_base import StatementConflict, StoredStatement, UnknownStatement
from trustyard.metadata.schema import metadata

authority_statements = Table(
    "authority_statements",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("type", String(16), nullable=False),
    Column("key_id", String(255), nullable=True),
    Column("issued", Float, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_authority_statements_order", "issued", "id"),
)


def _record(row: object) -> StoredStatement:
    return StoredStatement(
        row.id,  # type: ignore[attr-defined]
        row.type,  # type: ignore[attr-defined]
        row.key_id,  # type: ignore[attr-defined]
        row.issued,  # type: ignore[attr-defined]
        bytes(row.content),  # type: ignore[attr-defined]
    )


class SqlAuthorityStore:
    """Implements `metadata.authority_base.AuthorityStore` on the metadata engines."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer
        self._dialect = writer.dialect.name

    async def add_statement(self, statement: StoredStatement) -> bool:
        a = authority_statements
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        async with self.writer.begin() as conn:
            result = await conn.execute(
                insert(a)
                .values(
                    id=statement.id,
                    type=statement.type,
                    key_id=statement.key_id,
                    issued=statement.issued,
                    content=statement.content,
                    created_at=time.time(),
                )
                .on_conflict_do_nothing()
            )
            if result.rowcount:
                return True
            stored = (await conn.execute(select(a.c.content).where(a.c.id == statement.id))).first()
        if stored is not None and bytes(stored.content) == statement.content:
            return False
        raise StatementConflict(statement.id)

    async def list_statements(self, n: int, last: str | None) -> list[StoredStatement]:
        a = authority_statements
        query = select(a.c.id, a.c.type, a.c.key_id, a.c.issued, a.c.content)
        async with self.reader.connect() as conn:
            if last is not None:
                anchor = (await conn.execute(select(a.c.issued).where(a.c.id == last))).first()
                if anchor is None:
                    raise UnknownStatement(last)
                query = query.where(tuple_(a.c.issued, a.c.id) > tuple_(anchor.issued, last))
            rows = (await conn.execute(query.order_by(a.c.issued, a.c.id).limit(n))).all()
        return [_record(r) for r in rows]

    async def get_statement(self, statement_id: str) -> StoredStatement | None:
        a = authority_statements
        query = select(a.c.id, a.c.type, a.c.key_id, a.c.issued, a.c.content).where(
            a.c.id == statement_id
        )
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _record(row)

    async def count_statements(self) -> int:
        async with self.reader.connect() as conn:
            count = select(func.count()).select_from(authority_statements)
            return int((await conn.execute(count)).scalar_one())
