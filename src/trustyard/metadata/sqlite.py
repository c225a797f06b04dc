"""SQLite engines for the embedded default: WAL, shared by every worker process on the machine."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from trustyard.metadata.errors import MetadataUnavailable
from trustyard.metadata.group_commit import GroupCommitEngine
from trustyard.metadata.outages import GuardedPool, guard
from trustyard.metadata.units import ThreadUnits


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


# How long a writer waits for the other processes' writers, as SQLite's busy_timeout did.
WRITER_WAIT_SECONDS = 30.0
# Between two tries at the writer lock: short, unlike SQLite's busy handler (see _WriterLock).
_WRITER_POLL_SECONDS = 0.0001
_TAKE_WRITER_LOCK = "SELECT trustyard_writer_lock()"


def _begin_immediate(conn: Any) -> None:
    # Queue on the cross-process writer lock first (_WriterLock), then take SQLite's write lock
    # up front: a transaction that reads, then writes, must not find its snapshot stale at the
    # first write (SQLITE_BUSY_SNAPSHOT) when another worker committed.
    if not conn.exec_driver_sql(_TAKE_WRITER_LOCK).scalar():
        raise MetadataUnavailable(
            f"database is locked: another process kept writing for {WRITER_WAIT_SECONDS:.0f} s"
        )
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class _WriterLock:
    """One SQLite writer at a time across the worker processes, handed over within ~0.1 ms.

    Without it, a writer that finds the database locked sleeps in SQLite's busy handler
    (1, 2, 5 ... 100 ms between retries): concurrent pushes through two workers queued behind
    those sleeps (docs/benchmarks.md, 0.51x -> 0.74x the reference with this lock). The lock is
    an `flock` on a file beside the database, taken from the connection's own thread (aiosqlite)
    by a SQL function, so waiting never blocks the event loop; it is released when the
    connection returns to the pool after COMMIT or ROLLBACK, and by the kernel if the process
    dies. Only writers take it; readers never wait (WAL).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def connect(self, dbapi_connection: Any, record: Any) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        record.info["writer_lock_fd"] = fd
        dbapi_connection.create_function("trustyard_writer_lock", 0, lambda: _acquire(fd))

    def checkin(self, _dbapi_connection: Any, record: Any) -> None:
        fd = record.info.get("writer_lock_fd")
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self, _dbapi_connection: Any, record: Any) -> None:
        fd = record.info.pop("writer_lock_fd", None)
        if fd is not None:
            os.close(fd)


def _acquire(fd: int) -> int:
    """1 once this connection holds the writer lock, 0 after WRITER_WAIT_SECONDS (a function
    called from SQL cannot raise with a message of its own)."""
    deadline = time.monotonic() + WRITER_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return 1
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() > deadline:
            return 0
        time.sleep(_WRITER_POLL_SECONDS)


def create_private(path: Path) -> None:
    """Create the database file owner-only (0600) before SQLite does (0644 under umask 022).

    It holds password hashes and the encrypted trust keys. SQLite creates `-wal`, `-shm` and
    journals with the database file's mode, so they follow. An existing file is left as it is
    (`trustyard serve` warns when it is more open); a missing directory is SQLite's to report.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    os.close(fd)


def sqlite_outage(exc: BaseException) -> str | None:
    """SQLite cannot answer: the file cannot be opened or read, or it stayed locked past
    busy_timeout (SQLite reports all of these as OperationalError)."""
    if isinstance(exc, sqlite3.OperationalError):
        return f"sqlite: {str(exc)[:200]}"
    return None


class _SqlitePool(GuardedPool):
    def classify(self, exc: BaseException) -> str | None:
        return sqlite_outage(exc)


def sqlite_engines(path: Path) -> tuple[AsyncEngine, GroupCommitEngine]:
    """(reader, writer): readers share a small pool; the writer is one connection per process
    for async transactions, whose concurrent transactions share COMMITs
    (metadata/group_commit.py), and one on the units-of-work thread (metadata/units.py)."""
    create_private(path)
    url = f"sqlite+aiosqlite:///{path}"
    reader = create_async_engine(url, pool_size=4, max_overflow=4, poolclass=_SqlitePool)
    writer = create_async_engine(
        url, pool_size=1, max_overflow=0, pool_timeout=60, poolclass=_SqlitePool
    )
    # The units' thread is the only user of this pool's one connection (dispose closes it
    # from the loop's thread, hence no same-thread check).
    units = create_engine(
        f"sqlite:///{path}",
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        connect_args={"check_same_thread": False},
    )
    lock = _WriterLock(path.with_name(path.name + ".writer-lock"))
    for engine, begin in (
        (reader.sync_engine, _begin_deferred),
        (writer.sync_engine, _begin_immediate),
        (units, _begin_immediate),
    ):
        event.listen(engine, "connect", _pragmas)
        event.listen(engine, "begin", begin)
    guard(reader, sqlite_outage)
    guard(writer, sqlite_outage)
    guard(units, sqlite_outage)
    for engine in (writer.sync_engine, units):
        event.listen(engine, "connect", lock.connect)
        event.listen(engine.pool, "checkin", lock.checkin)
        event.listen(engine.pool, "close", lock.close)
    return reader, GroupCommitEngine(writer, ThreadUnits(units, sqlite_outage))
