"""Tag history in the metadata database (one row per tag move, written by metadata/sql.py in
the transaction that moves the tag, so a move is never unrecorded)."""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trustyard.metadata import schema as t
from trustyard.metadata.lifecycle_base import TagMove
from trustyard.metadata.schema import metadata

# Repository names as text, not ids: the history outlives a repository's rows.
tag_history = Table(
    "tag_history",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository", String(255), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("old_digest", String(200), nullable=True),
    Column("new_digest", String(200), nullable=True),
    Column("actor", String(255), nullable=True),
    Column("at", Float, nullable=False),
    Index("ix_tag_history_tag", "repository", "tag", "id"),
    Index("ix_tag_history_at", "at"),
)


async def record_moves(conn: AsyncConnection, moves: list[TagMove]) -> None:
    """Append moves inside the caller's write transaction."""
    if moves:
        await conn.execute(tag_history.insert(), [m._asdict() for m in moves])


async def history_rows(conn: AsyncConnection) -> list[tuple[str, str, float]]:
    """(repository, digest, last time a tag moved off it): what GC may keep for a while."""
    h = tag_history
    query = (
        select(h.c.repository, h.c.old_digest, func.max(h.c.at))
        .where(h.c.old_digest.is_not(None))
        .group_by(h.c.repository, h.c.old_digest)
    )
    return [(r, d, float(at)) for r, d, at in (await conn.execute(query)).all()]


class SqlLifecycleStore:
    """Implements `metadata.lifecycle_base.TagHistoryIndex` on the metadata engines."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer

    async def tag_history(self, repository: str, tag: str, limit: int) -> list[TagMove]:
        h = tag_history
        query = (
            select(h.c.repository, h.c.tag, h.c.old_digest, h.c.new_digest, h.c.actor, h.c.at)
            .where(h.c.repository == repository, h.c.tag == tag)
            .order_by(h.c.id.desc())
            .limit(limit)
        )
        async with self.reader.connect() as conn:
            return [TagMove(*row) for row in (await conn.execute(query)).all()]

    async def tags_of(self, repository: str, digest: str) -> list[str]:
        query = (
            select(t.tags.c.name)
            .join(t.repositories, t.repositories.c.id == t.tags.c.repo_id)
            .where(t.repositories.c.name == repository, t.tags.c.digest == digest)
            .order_by(t.tags.c.name)
        )
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).scalars())
