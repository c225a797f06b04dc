"""Simple-signing signatures stored by the registry (the containers "signatures" extension API).

One row per signature: the repository, the manifest digest it signs, the client-chosen unique
name (`<digest>@<id>`) and the signature bytes (an OpenPGP message). Rows whose manifest is gone
are removed by garbage collection (`prune_orphans`, called by registry/gc.py), never by deleting
a manifest;
holders of the delete right remove single rows through the extension API's DELETE.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    delete,
    exists,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from trustyard.metadata import schema as t
from trustyard.metadata.events_base import OutboxEntry
from trustyard.metadata.events_sql import insert_outbox
from trustyard.metadata.schema import metadata
from trustyard.metadata.signatures_base import ManifestMissing, StoredSignature
from trustyard.oci.digest import Digest

simple_signatures = Table(
    "simple_signatures",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id"), primary_key=True),
    Column("digest", String(200), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("content", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_simple_signatures_digest", "repo_id", "digest"),
)


class SqlSignatureStore:
    """Implements `trustyard.registry.signatures.SignatureStore` on the metadata engines."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer
        self._dialect = writer.dialect.name

    async def list_signatures(self, repository: str, digest: Digest) -> list[StoredSignature]:
        s = simple_signatures
        query = (
            select(s.c.name, s.c.content, s.c.created_at)
            .join(t.repositories, t.repositories.c.id == s.c.repo_id)
            .where(t.repositories.c.name == repository, s.c.digest == str(digest))
            .order_by(s.c.created_at, s.c.name)
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [StoredSignature(r.name, bytes(r.content), r.created_at) for r in rows]

    async def add_signature(
        self,
        repository: str,
        digest: Digest,
        name: str,
        content: bytes,
        admit: Callable[[list[StoredSignature]], None],
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Store one signature; False when the same bytes (or name) are already there.

        Raises ManifestMissing when the manifest is not in the repository. `admit` sees the
        manifest's other signatures inside the write transaction and raises to refuse this one
        (the limits of registry/signatures.py), so concurrent uploads cannot both pass them.
        """
        s = simple_signatures
        async with self.writer.begin() as conn:
            repo_id = (
                await conn.execute(
                    select(t.repositories.c.id).where(t.repositories.c.name == repository)
                )
            ).scalar_one_or_none()
            if repo_id is None:
                raise ManifestMissing(str(digest))
            present = (
                await conn.execute(
                    select(t.manifests.c.digest).where(
                        t.manifests.c.repo_id == repo_id, t.manifests.c.digest == str(digest)
                    )
                )
            ).first()
            if present is None:
                raise ManifestMissing(str(digest))
            rows = (
                await conn.execute(
                    select(s.c.name, s.c.content, s.c.created_at).where(
                        s.c.repo_id == repo_id, s.c.digest == str(digest)
                    )
                )
            ).all()
            if any(bytes(r.content) == content or r.name == name for r in rows):
                return False
            admit([StoredSignature(r.name, bytes(r.content), r.created_at) for r in rows])
            insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
            result = await conn.execute(
                insert(s)
                .values(
                    repo_id=repo_id,
                    digest=str(digest),
                    name=name,
                    content=content,
                    created_at=time.time(),
                )
                .on_conflict_do_nothing()
            )
            if not result.rowcount:
                return False  # a concurrent upload stored the same name first
            await conn.run_sync(insert_outbox, events, time.time())
            return True

    async def delete_signatures(self, repository: str, digest: Digest, names: list[str]) -> int:
        """Delete the named signatures of a manifest; returns how many were removed."""
        if not names:
            return 0
        s = simple_signatures
        repo_id = (
            select(t.repositories.c.id).where(t.repositories.c.name == repository).scalar_subquery()
        )
        async with self.writer.begin() as conn:
            result = await conn.execute(
                delete(s).where(
                    s.c.repo_id == repo_id, s.c.digest == str(digest), s.c.name.in_(names)
                )
            )
        return int(result.rowcount or 0)

    async def prune_orphans(self, cutoff: float) -> int:
        """GC: delete signatures older than `cutoff` whose manifest is gone; how many went.

        Younger ones stay, like everything else inside the grace period."""
        s, m = simple_signatures, t.manifests
        async with self.writer.begin() as conn:
            result = await conn.execute(
                delete(s).where(
                    s.c.created_at < cutoff,
                    ~exists().where(m.c.repo_id == s.c.repo_id, m.c.digest == s.c.digest),
                )
            )
        return int(result.rowcount or 0)

    async def count(self) -> int:
        async with self.reader.connect() as conn:
            return int(
                (
                    await conn.execute(select(func.count()).select_from(simple_signatures))
                ).scalar_one()
            )
