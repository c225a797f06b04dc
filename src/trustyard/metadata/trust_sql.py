"""Trust tables (on the shared `schema.metadata`) and the SQL `TrustStore`.

Every version of every TUF file is kept; "current" is the highest version of a role. A publish
(files + changefeed record + audit event) is one transaction on the writer engine, so a rejected
or interrupted publish leaves nothing behind.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trustyard.metadata.events_base import OutboxEntry
from trustyard.metadata.events_sql import insert_outbox
from trustyard.metadata.schema import metadata
from trustyard.trust.store import AuditEvent, Change, ServerKey, StaleVersion, TufFile

tuf_files = Table(
    "tuf_files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("gun", String(255), nullable=False),
    Column("role", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("gun", "role", "version", name="uq_tuf_files_version"),
    Index("ix_tuf_files_sha256", "gun", "role", "sha256"),
)

tuf_server_keys = Table(
    "tuf_server_keys",
    metadata,
    Column("gun", String(255), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("key_id", String(64), primary_key=True),
    Column("algorithm", String(32), nullable=False),
    Column("public", LargeBinary, nullable=False),
    # PKCS#8 PEM, encrypted with the server's trust passphrase.
    Column("private", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

tuf_changes = Table(
    "tuf_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("gun", String(255), nullable=False),
    Column("version", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("category", String(20), nullable=False),
    Index("ix_tuf_changes_gun", "gun", "id"),
)

trust_audit = Table(
    "trust_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("gun", String(255), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_trust_audit_gun", "gun", "id"),
)


# Advisory-lock key space (first half of the two-int4 form, apart from the single-bigint
# WRITE_LOCK_KEY) for "the first server key of one GUN's role" on PostgreSQL.
FIRST_KEY_LOCK_SPACE = 0x54594B31  # "TYK1"


def _key(row: object) -> ServerKey:
    r = row._mapping  # type: ignore[attr-defined]
    return ServerKey(
        r["gun"],
        r["role"],
        r["key_id"],
        r["algorithm"],
        bytes(r["public"]),
        bytes(r["private"]),
        r["created_at"],
    )


def _file(row: object) -> TufFile:
    r = row._mapping  # type: ignore[attr-defined]
    return TufFile(
        r["gun"], r["role"], r["version"], r["sha256"], bytes(r["data"]), r["created_at"]
    )


class SqlTrustStore:
    """Implements `trustyard.trust.store.TrustStore` on the metadata engines."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer

    async def get_file(
        self, gun: str, role: str, *, version: int | None = None, sha256: str | None = None
    ) -> TufFile | None:
        c = tuf_files.c
        query = select(tuf_files).where(c.gun == gun, c.role == role)
        if version is not None:
            query = query.where(c.version == version)
        if sha256 is not None:
            query = query.where(c.sha256 == sha256.lower())
        query = query.order_by(c.version.desc()).limit(1)
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return _file(row) if row is not None else None

    async def record_audit(self, event: AuditEvent) -> None:
        """`AuditSink`: one event on its own, as cheap as a tag write (one INSERT)."""
        async with self.writer.begin() as conn:
            await conn.execute(
                insert(trust_audit).values(
                    created_at=time.time(),
                    gun=event.gun[:255],
                    action=event.action[:32],
                    actor=event.actor[:255],
                    detail=json.dumps(event.detail, sort_keys=True, default=str),
                )
            )

    async def _audit(self, conn: AsyncConnection, event: AuditEvent, now: float) -> None:
        await conn.execute(
            insert(trust_audit).values(
                created_at=now,
                gun=event.gun,
                action=event.action,
                actor=event.actor,
                detail=json.dumps(event.detail, sort_keys=True),
            )
        )

    async def publish(
        self,
        gun: str,
        files: list[TufFile],
        change: Change,
        audit: AuditEvent,
        events: Sequence[OutboxEntry] = (),
    ) -> None:
        now = time.time()
        try:
            async with self.writer.begin() as conn:
                for f in files:
                    current = (
                        await conn.execute(
                            select(func.max(tuf_files.c.version)).where(
                                tuf_files.c.gun == gun, tuf_files.c.role == f.role
                            )
                        )
                    ).scalar_one_or_none()
                    if current is not None and current >= f.version:
                        raise StaleVersion(f.role, f.version, int(current))
                    await conn.execute(
                        insert(tuf_files).values(
                            gun=gun,
                            role=f.role,
                            version=f.version,
                            sha256=f.sha256,
                            data=f.data,
                            created_at=now,
                        )
                    )
                await conn.execute(
                    insert(tuf_changes).values(
                        created_at=now,
                        gun=gun,
                        version=change.version,
                        sha256=change.sha256,
                        category=change.category,
                    )
                )
                await self._audit(conn, audit, now)
                await conn.run_sync(insert_outbox, events, now)
        except IntegrityError:
            # A concurrent writer on another engine (PostgreSQL) stored the same version first.
            raise StaleVersion("unknown", 0, 0) from None

    async def delete_gun(self, gun: str, audit: AuditEvent) -> int:
        now = time.time()
        async with self.writer.begin() as conn:
            result = await conn.execute(delete(tuf_files).where(tuf_files.c.gun == gun))
            await conn.execute(
                insert(tuf_changes).values(
                    created_at=now, gun=gun, version=0, sha256="", category="deletion"
                )
            )
            await self._audit(conn, audit, now)
            return int(result.rowcount or 0)

    async def server_keys(self, gun: str, role: str) -> list[ServerKey]:
        c = tuf_server_keys.c
        query = (
            select(tuf_server_keys)
            .where(c.gun == gun, c.role == role)
            .order_by(c.created_at.desc())
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_key(r) for r in rows]

    async def add_server_key(self, key: ServerKey, audit: AuditEvent | None) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(
                insert(tuf_server_keys).values(
                    gun=key.gun,
                    role=key.role,
                    key_id=key.key_id,
                    algorithm=key.algorithm,
                    public=key.public,
                    private=key.private,
                    created_at=key.created_at,
                )
            )
            if audit is not None:
                await self._audit(conn, audit, key.created_at)

    async def add_first_server_key(self, key: ServerKey) -> ServerKey:
        """Insert-if-absent, then read back the winner, in one transaction.

        The insert is one conditional statement (INSERT ... SELECT ... WHERE NOT EXISTS). SQLite
        writers are serialised across processes (BEGIN IMMEDIATE under the writer lock), so the
        condition holds at commit; on PostgreSQL (READ COMMITTED, replicas writing at once) the
        transaction first takes an advisory lock on the GUN's role, so a concurrent first reader
        waits, then its statement sees the committed key and inserts nothing.
        """
        c = tuf_server_keys.c
        async with self.writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"),
                    {"space": FIRST_KEY_LOCK_SPACE, "name": f"{key.gun} {key.role}"},
                )
            present = exists().where(c.gun == key.gun, c.role == key.role)
            row = select(
                literal(key.gun, String),
                literal(key.role, String),
                literal(key.key_id, String),
                literal(key.algorithm, String),
                literal(key.public, LargeBinary),
                literal(key.private, LargeBinary),
                literal(key.created_at, Float),
            ).where(~present)
            columns = ["gun", "role", "key_id", "algorithm", "public", "private", "created_at"]
            await conn.execute(insert(tuf_server_keys).from_select(columns, row))
            winner = (
                await conn.execute(
                    select(tuf_server_keys)
                    .where(c.gun == key.gun, c.role == key.role)
                    .order_by(c.created_at.desc())
                    .limit(1)
                )
            ).one()
        return _key(winner)

    async def changes(
        self, gun: str | None, change_id: int | None, records: int, reverse: bool
    ) -> list[Change]:
        c = tuf_changes.c
        query = select(tuf_changes)
        if gun is not None:
            query = query.where(c.gun == gun)
        if reverse:
            if change_id is not None and change_id > 0:
                query = query.where(c.id < change_id)
            query = query.order_by(c.id.desc())
        else:
            query = query.where(c.id > (change_id or 0)).order_by(c.id.asc())
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query.limit(records))).all()
        out = [Change(r.id, r.created_at, r.gun, r.version, r.sha256, r.category) for r in rows]
        return out

    async def audit_events(self, gun: str) -> list[tuple[float, AuditEvent]]:
        query = select(trust_audit).where(trust_audit.c.gun == gun).order_by(trust_audit.c.id)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            (r.created_at, AuditEvent(r.action, r.gun, r.actor, json.loads(r.detail))) for r in rows
        ]
