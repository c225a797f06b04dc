"""Which database failures are outages (503 + Retry-After), classified at the metadata backends'
edge over real exception objects: asyncpg's, as SQLAlchemy's asyncpg adapter and DBAPIError wrap
them, SQLite's, and real engines that cannot reach their database."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import asyncpg.exceptions as pg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError

from tests.integration.server import free_port
from trustyard.metadata.errors import MetadataUnavailable
from trustyard.metadata.outages import outage_reason
from trustyard.metadata.postgres import postgres_engines, postgres_outage
from trustyard.metadata.sqlite import sqlite_outage
from trustyard.wiring import open_database

_DBAPI = AsyncAdapt_asyncpg_dbapi(__import__("asyncpg"))


def _as_sqlalchemy_raises(error: Exception) -> DBAPIError:
    """`error` as SQLAlchemy raises it from an asyncpg connection: adapted, then wrapped."""
    translate = _DBAPI._asyncpg_error_translate
    adapted_cls = next((translate[c] for c in type(error).__mro__ if c in translate), _DBAPI.Error)
    adapted = adapted_cls(str(error), error)
    adapted.__cause__ = error
    wrapped = DBAPIError.instance("SELECT 1", None, adapted, _DBAPI.Error)
    wrapped.__cause__ = adapted
    return wrapped


OUTAGES = [
    pg.CannotConnectNowError("the database system is starting up"),
    pg.CannotConnectNowError("the database system is shutting down"),
    pg.AdminShutdownError("terminating connection due to administrator command"),
    pg.CrashShutdownError("terminating connection because of crash of another server process"),
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pg.ConnectionFailureError("connection failure"),
    pg.TooManyConnectionsError("sorry, too many clients already"),
]
NOT_OUTAGES = [
    pg.UniqueViolationError("duplicate key value violates unique constraint"),
    pg.UndefinedTableError('relation "manifests" does not exist'),
    pg.InvalidPasswordError('password authentication failed for user "ty"'),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_postgres_unavailable_states_are_outages(error: Exception) -> None:
    assert postgres_outage(error) is not None
    assert outage_reason(_as_sqlalchemy_raises(error), postgres_outage) is not None


@pytest.mark.parametrize("error", NOT_OUTAGES, ids=lambda e: type(e).__name__)
def test_other_postgres_errors_are_not(error: Exception) -> None:
    assert postgres_outage(error) is None
    assert outage_reason(_as_sqlalchemy_raises(error), postgres_outage) is None


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        OSError(errno.EHOSTUNREACH, "No route to host"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_socket_failures_reaching_postgres_are_outages(error: Exception) -> None:
    assert outage_reason(error, postgres_outage) is not None


def test_sqlite_busy_beyond_the_wait_is_an_outage() -> None:
    locked = sqlite3.OperationalError("database is locked")
    assert sqlite_outage(locked) is not None
    wrapped = DBAPIError.instance("BEGIN IMMEDIATE", None, locked, sqlite3.Error)
    assert outage_reason(wrapped, sqlite_outage) is not None
    assert sqlite_outage(sqlite3.IntegrityError("UNIQUE constraint failed")) is None


async def test_a_postgres_nobody_listens_on_is_unavailable() -> None:
    reader, writer = postgres_engines(f"postgresql://ty@127.0.0.1:{free_port()}/registry")
    try:
        for engine in (reader, writer):
            with pytest.raises(MetadataUnavailable) as err:
                async with engine.connect() as conn:
                    await conn.exec_driver_sql("SELECT 1")
            assert "connection" in err.value.reason
    finally:
        await reader.dispose()
        await writer.dispose()


async def test_sqlite_locked_by_another_writer_past_busy_timeout(tmp_path: Path) -> None:
    """Another program (not a trustyard worker, so no writer lock) holds SQLite's write lock."""
    database = await open_database(tmp_path / "metadata.db", create=True)
    store = database.metadata
    other = sqlite3.connect(tmp_path / "metadata.db", isolation_level=None)
    try:
        async with store.writer.connect() as conn:  # the writer's one pooled connection
            await conn.exec_driver_sql("PRAGMA busy_timeout=50")
            await conn.commit()
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(MetadataUnavailable) as err:
            await store.create_upload("a" * 32, "team/app")
        assert "database is locked" in err.value.reason
        other.execute("ROLLBACK")
        await store.create_upload("a" * 32, "team/app")
    finally:
        other.close()
        await database.close()
