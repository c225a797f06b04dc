"""PostgreSQL engine for scaled-out deployments (asyncpg): several replicas share one database.

Writers run concurrently under READ COMMITTED, each holding the shared side of one advisory
lock for its transaction; GC takes the exclusive side, so its mark and sweep sees no write in
flight (the same guarantee BEGIN IMMEDIATE gives on SQLite, without serialising pushes).
"""

from __future__ import annotations

import errno
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from trustyard.metadata.outages import GuardedPool, guard
from trustyard.metadata.sql import WRITE_LOCK_KEY


def _shared_write_lock(conn: Any) -> None:
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK_KEY})")


# SQLSTATEs that mean "not now" rather than "not this request": class 08 (connection
# exception), 57P0x (operator intervention: admin/crash shutdown, cannot connect now while
# starting up or shutting down, database dropped, idle session timeout) and 53300
# (too many connections).
_UNAVAILABLE_CLASSES = ("08", "57P0")
_UNAVAILABLE_STATES = frozenset({"53300"})
# Socket errors that are not ConnectionError subclasses but still mean "unreachable".
_UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ETIMEDOUT})


def postgres_outage(exc: BaseException) -> str | None:
    """PostgreSQL cannot answer right now: shutting down, starting up, restarting, out of
    connections, unreachable. asyncpg's errors carry the SQLSTATE (`sqlstate`), and so do
    SQLAlchemy's adapted errors that wrap them."""
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and (
        state.startswith(_UNAVAILABLE_CLASSES) or state in _UNAVAILABLE_STATES
    ):
        return f"postgresql {state}: {str(exc)[:200]}"
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return f"postgresql unreachable: {exc}"
    return None


class _PostgresPool(GuardedPool):
    def classify(self, exc: BaseException) -> str | None:
        return postgres_outage(exc)


def postgres_engines(url: str, pool_size: int = 10) -> tuple[AsyncEngine, AsyncEngine]:
    """(reader, writer) over one pool; writer transactions take the shared write lock."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+asyncpg://" + url.split("://", 1)[1]
    reader, writer = (
        guard(
            create_async_engine(
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                poolclass=_PostgresPool,
            ),
            postgres_outage,
        )
        for _ in range(2)
    )
    event.listen(writer.sync_engine, "begin", _shared_write_lock)
    return reader, writer
