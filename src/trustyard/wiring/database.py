"""The registry's one database: a (reader, writer) engine pair, one schema check, every store.

The metadata, auth, trust and signature stores all live in the same database; they share one
engine pair (one pool each side, one SQLite writer connection per process) instead of each
opening their own.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from trustyard.metadata import migrate
from trustyard.metadata.audit_sql import SqlAuditStore
from trustyard.metadata.auth_sql import SqlAuthStore
from trustyard.metadata.authority_sql import SqlAuthorityStore
from trustyard.metadata.copy import SqlTables
from trustyard.metadata.events_sql import SqlOutboxStore
from trustyard.metadata.lifecycle_sql import SqlLifecycleStore
from trustyard.metadata.migrate import SchemaMismatch
from trustyard.metadata.postgres import postgres_engines
from trustyard.metadata.signatures_sql import SqlSignatureStore
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.metadata.sqlite import sqlite_engines
from trustyard.metadata.trust_sql import SqlTrustStore

__all__ = ["Database", "SchemaMismatch", "is_postgres_url", "open_database", "upgrade_database"]


def is_postgres_url(target: Path | str) -> bool:
    return isinstance(target, str) and target.split(":", 1)[0].split("+", 1)[0] in (
        "postgresql",
        "postgres",
    )


class Database:
    """Every store on one engine pair; `close` disposes the pair (once, for all of them)."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer
        self.metadata = SqlMetadataStore(reader, writer)
        self.auth = SqlAuthStore(reader, writer)
        self.trust = SqlTrustStore(reader, writer)
        self.signatures = SqlSignatureStore(reader, writer)
        self.authority = SqlAuthorityStore(reader, writer)
        self.audit = SqlAuditStore(reader, writer)
        self.events = SqlOutboxStore(reader, writer)
        self.lifecycle = SqlLifecycleStore(reader, writer)
        self.tables = SqlTables(self.metadata)

    async def ping(self) -> None:
        """One round trip on the reader pool (readiness probes)."""
        async with self.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.reader.dispose()
        await self.writer.dispose()


def _engines(target: Path | str, create: bool) -> tuple[AsyncEngine, AsyncEngine]:
    if is_postgres_url(target):
        return postgres_engines(str(target))
    path = Path(target)
    if create:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir: owner only
    return sqlite_engines(path)


async def open_database(target: Path | str, *, create: bool = False) -> Database:
    """Open the database: a SQLite file path (embedded default) or a PostgreSQL URL.

    The schema must be at the migrations' head. With `create`, the embedded SQLite database is
    created or upgraded in place; PostgreSQL is only ever upgraded by `trustyard db upgrade`.
    Raises SchemaMismatch (with what to do) otherwise.
    """
    database = Database(*_engines(target, create))
    try:
        if create and not is_postgres_url(target):
            await migrate.upgrade(database.writer)
        else:
            await migrate.check(database.reader)
    except BaseException:
        await database.close()
        raise
    return database


async def upgrade_database(target: Path | str) -> tuple[str | None, str | None]:
    """`trustyard db upgrade`: run pending migrations; returns (before, after) revisions."""
    reader, writer = _engines(target, create=True)
    try:
        return await migrate.upgrade(writer)
    finally:
        await reader.dispose()
        await writer.dispose()


def pool_use(database: Database) -> dict[str, tuple[int, int]]:
    """(connections checked out, connections open) per pool, for the pool gauges in /metrics."""
    found = {}
    for name, engine in (("reader", database.reader), ("writer", database.writer)):
        pool = engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            found[name] = (pool.checkedout(), pool.checkedout() + pool.checkedin())
    return found
