"""Tag lifecycle tables: tag history (one row per tag move, written by metadata/sql.py in the
transaction that moves the tag, so a move is never unrecorded) and manifests' last pulls."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    and_,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from trustyard.metadata import schema as t
from trustyard.metadata.lifecycle_base import RetentionSnapshot, RetentionTag, TagMove
from trustyard.metadata.schema import metadata
from trustyard.metadata.signatures_sql import simple_signatures

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

# When each manifest was last pulled (at most one write per manifest per hour per process).
manifest_pulls = Table(
    "manifest_pulls",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("digest", String(200), primary_key=True),
    Column("pulled_at", Float, nullable=False),
)


def record_moves(conn: Connection, moves: list[TagMove]) -> None:
    """Append moves inside the caller's write transaction (synchronous, as `insert_outbox`)."""
    if moves:
        conn.execute(tag_history.insert(), [m._asdict() for m in moves])


def history_rows(conn: Connection) -> list[tuple[str, str, float]]:
    """(repository, digest, last time a tag moved off it): what GC may keep for a while."""
    h = tag_history
    query = (
        select(h.c.repository, h.c.old_digest, func.max(h.c.at))
        .where(h.c.old_digest.is_not(None))
        .group_by(h.c.repository, h.c.old_digest)
    )
    return [(r, d, float(at)) for r, d, at in conn.execute(query).all()]


class SqlLifecycleStore:
    """Implements `metadata.lifecycle_base.TagHistoryIndex` and `NamespaceUsage`."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer
        self._dialect = writer.dialect.name

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

    async def record_pulls(self, pulls: list[tuple[str, str, float]]) -> None:
        if not pulls:
            return
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        stmt = insert(manifest_pulls)
        async with self.writer.begin() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["repository", "digest"],
                    set_={"pulled_at": stmt.excluded.pulled_at},
                ),
                [{"repository": r, "digest": d, "pulled_at": at} for r, d, at in pulls],
            )

    async def retention_snapshot(self) -> RetentionSnapshot:
        r, tg, m = t.repositories, t.tags, t.manifests
        async with self.reader.connect() as conn:
            tags = await conn.execute(
                select(r.c.name, tg.c.name, tg.c.digest, tg.c.updated_at).join(
                    r, r.c.id == tg.c.repo_id
                )
            )
            subjects = await conn.execute(
                select(r.c.name, m.c.subject)
                .join(r, r.c.id == m.c.repo_id)
                .where(m.c.subject.is_not(None))
            )
            sigs = simple_signatures
            simple = await conn.execute(
                select(r.c.name, sigs.c.digest).join(r, r.c.id == sigs.c.repo_id).distinct()
            )
            refs = t.manifest_refs
            children = await conn.execute(
                select(r.c.name, refs.c.child)
                .join(r, r.c.id == refs.c.repo_id)
                .where(refs.c.kind == "manifest")
            )
            pulls = await conn.execute(select(manifest_pulls))
            return RetentionSnapshot(
                tags=[RetentionTag(*row) for row in tags.all()],
                signed={(a, b) for a, b in subjects.all()} | {(a, b) for a, b in simple.all()},
                children={(a, b) for a, b in children.all()},
                pulled={(a, b): at for a, b, at in pulls.all()},
            )

    async def delete_tag_if(self, repository: str, tag: str, digest: str, actor: str) -> bool:
        repo_id = (
            select(t.repositories.c.id).where(t.repositories.c.name == repository).scalar_subquery()
        )
        async with self.writer.begin() as conn:
            result = await conn.execute(
                delete(t.tags).where(
                    t.tags.c.repo_id == repo_id, t.tags.c.name == tag, t.tags.c.digest == digest
                )
            )
            if not result.rowcount:
                return False
            moves = [TagMove(repository, tag, digest, None, actor, time.time())]
            await conn.run_sync(record_moves, moves)
            return True

    # -- quotas --------------------------------------------------------------------------------
    @staticmethod
    def _in_namespace(column: Any, namespace: str) -> Any:
        """`column` is `namespace` or starts with `namespace/`: a range, so no LIKE escaping
        (`_` is valid in names) and the unique index on names serves it ("0" follows "/")."""
        return or_(column == namespace, and_(column > namespace + "/", column < namespace + "0"))

    async def namespace_usage(self, namespace: str) -> int:
        r, rb, b, m = t.repositories, t.repo_blobs, t.blobs, t.manifests
        in_ns = self._in_namespace(r.c.name, namespace)
        blobs = (
            select(b.c.digest, b.c.size)
            .join(rb, rb.c.digest == b.c.digest)
            .join(r, r.c.id == rb.c.repo_id)
            .where(in_ns)
            .distinct()
            .subquery()
        )
        async with self.reader.connect() as conn:
            blob_bytes = (await conn.execute(select(func.sum(blobs.c.size)))).scalar_one()
            manifest_bytes = (
                await conn.execute(
                    select(func.sum(m.c.size)).join(r, r.c.id == m.c.repo_id).where(in_ns)
                )
            ).scalar_one()
        return int(blob_bytes or 0) + int(manifest_bytes or 0)

    async def namespace_holds(self, namespace: str, digest: str) -> bool:
        r, rb = t.repositories, t.repo_blobs
        query = (
            select(rb.c.digest)
            .join(r, r.c.id == rb.c.repo_id)
            .where(rb.c.digest == digest, self._in_namespace(r.c.name, namespace))
            .limit(1)
        )
        async with self.reader.connect() as conn:
            return (await conn.execute(query)).first() is not None

    async def usage_rows(self) -> list[tuple[str, str, int]]:
        r, rb, b, m = t.repositories, t.repo_blobs, t.blobs, t.manifests
        async with self.reader.connect() as conn:
            blobs = await conn.execute(
                select(r.c.name, b.c.digest, b.c.size)
                .join(rb, rb.c.repo_id == r.c.id)
                .join(b, b.c.digest == rb.c.digest)
            )
            manifests = await conn.execute(
                select(r.c.name, m.c.digest, m.c.size).join(m, m.c.repo_id == r.c.id)
            )
            return [(n, d, int(s)) for n, d, s in [*blobs.all(), *manifests.all()]]
