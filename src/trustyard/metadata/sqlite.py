"""SQLite engines for the embedded default: WAL, shared by every worker process on the machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event decide how transactions start (see _begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_deferred(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN")


def _begin_immediate(conn: Any) -> None:
    # Take the write lock up front: a transaction that reads, then writes, must not find its
    # snapshot stale at the first write (SQLITE_BUSY_SNAPSHOT) when another worker committed.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_engines(path: Path) -> tuple[AsyncEngine, AsyncEngine]:
    """(reader, writer): readers share a small pool; one writer connection per process."""
    url = f"sqlite+aiosqlite:///{path}"
    reader = create_async_engine(url, pool_size=4, max_overflow=4)
    writer = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)
    for engine, begin in ((reader, _begin_deferred), (writer, _begin_immediate)):
        event.listen(engine.sync_engine, "connect", _pragmas)
        event.listen(engine.sync_engine, "begin", begin)
    return reader, writer
