"""The cross-process SQLite writer lock (metadata/sqlite.py), with real SQLite files.

Two stores on one file stand in for two worker processes: each has its own connection and its
own descriptor on the lock file, which is what `flock` tells apart.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.metadata import sqlite as sqlite_engines
from trustyard.metadata.errors import MetadataUnavailable
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.wiring import open_database


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqlMetadataStore, SqlMetadataStore]]:
    a = (await open_database(tmp_path / "metadata.db", create=True)).metadata
    b = (await open_database(tmp_path / "metadata.db", create=True)).metadata
    yield a, b
    await a.close()
    await b.close()


async def test_concurrent_writers_all_land(
    stores: tuple[SqlMetadataStore, SqlMetadataStore],
) -> None:
    a, b = stores
    ids = [f"{i:032x}" for i in range(60)]
    await asyncio.gather(
        *(store.create_upload(i, "team/app") for store, i in zip([a, b] * 30, ids, strict=True))
    )
    for i in ids:
        record = await b.get_upload(i)
        assert record is not None and record.repository == "team/app"


async def test_a_writer_waits_for_the_lock_then_says_so(
    stores: tuple[SqlMetadataStore, SqlMetadataStore],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a, _ = stores
    monkeypatch.setattr(sqlite_engines, "WRITER_WAIT_SECONDS", 0.5)
    fd = os.open(tmp_path / "metadata.db.writer-lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer, mid-transaction
        started = time.monotonic()
        with pytest.raises(MetadataUnavailable) as err:
            await a.create_upload("a" * 32, "team/app")
        assert "database is locked" in err.value.reason
        assert time.monotonic() - started >= 0.5
        fcntl.flock(fd, fcntl.LOCK_UN)
        await a.create_upload("a" * 32, "team/app")  # and goes ahead once it is free
    finally:
        os.close(fd)
    assert await a.get_upload("a" * 32) is not None


async def test_a_failed_transaction_releases_the_lock(
    stores: tuple[SqlMetadataStore, SqlMetadataStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = stores
    monkeypatch.setattr(sqlite_engines, "WRITER_WAIT_SECONDS", 2.0)
    with pytest.raises(RuntimeError):
        async with a.writer.begin() as conn:
            await conn.exec_driver_sql("SELECT 1")
            raise RuntimeError("handler failed halfway")
    await b.create_upload("b" * 32, "team/app")  # not stuck behind a's rolled-back transaction
    assert await a.get_upload("b" * 32) is not None
