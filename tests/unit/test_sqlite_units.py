"""Units of work on SQLite's writer thread (metadata/units.py), on a real SQLite file.

Units queued together share one COMMIT on the thread, yet each keeps the meaning of a
transaction: its own failure undoes only its own statements, a failed COMMIT fails every unit
that shared it, a result is delivered only once its batch committed, and a unit whose caller
gave up before it started does not run.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tests.unit.sqlite_store import (  # store_fixture: the `store` the tests ask for
    assert_uploads,
    repository_of,
    store_fixture,  # noqa: F401
)
from trustyard.metadata import schema as t
from trustyard.metadata.errors import MetadataUnavailable
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.metadata.units import ThreadUnits


def units_of(store: SqlMetadataStore) -> ThreadUnits:
    assert isinstance(store.units, ThreadUnits)  # SQLite's writes run on the thread
    return store.units


def count_commits(units: ThreadUnits) -> list[int]:
    commits = [0]

    def on_commit(_conn: Any) -> None:
        commits[0] += 1

    event.listen(units.engine, "commit", on_commit)
    return commits


async def names(store: SqlMetadataStore) -> set[str]:
    async with store.reader.connect() as conn:
        return set((await conn.execute(select(t.repositories.c.name))).scalars())


def hold_the_thread(units: ThreadUnits) -> tuple[threading.Event, threading.Event, Any]:
    """A unit that blocks the writer thread until released, so the next units queue up and
    form one batch behind it."""
    started, release = threading.Event(), threading.Event()

    def blocker(conn: Connection) -> None:
        started.set()
        release.wait(10)

    return started, release, units.run(blocker)


async def test_units_run_on_one_thread_and_queued_units_share_commits(
    store: SqlMetadataStore,
) -> None:
    units = units_of(store)
    commits = count_commits(units)
    seen: set[int] = set()

    def where(conn: Connection) -> None:
        seen.add(threading.get_ident())

    await units.run(where)
    started, release, held = hold_the_thread(units)
    first = asyncio.ensure_future(held)
    await asyncio.to_thread(started.wait, 10)
    ids = [f"{i:032x}" for i in range(100)]
    rest = [asyncio.ensure_future(store.create_upload(i, repository_of(i))) for i in ids]
    await asyncio.sleep(0.05)  # every unit is queued behind the blocker
    assert not any(task.done() for task in rest)
    release.set()
    await asyncio.gather(first, *rest)
    await units.run(where)
    assert seen and threading.get_ident() not in seen and len(seen) == 1
    # where, the blocker, two batches of 64 + 36, where again
    assert commits[0] == 5
    await assert_uploads(store, ids)


@pytest.mark.parametrize("failing_first", [False, True])
async def test_a_failed_unit_undoes_only_its_own_writes(
    store: SqlMetadataStore, failing_first: bool
) -> None:
    units = units_of(store)
    await store.create_upload("a" * 32, "team/app")

    def duplicate(conn: Connection) -> None:
        conn.execute(insert(t.repositories).values(name="team/half-written", created_at=0.0))
        conn.execute(insert(t.uploads).values(id="a" * 32, repo_id=1, started_at=0.0))

    started, release, held = hold_the_thread(units)
    first = asyncio.ensure_future(held)
    await asyncio.to_thread(started.wait, 10)
    if failing_first:
        release.set()  # the failing unit is the batch's only one: no SAVEPOINT
        await first
    batch = [store.create_upload("b" * 32, "team/app"), store.create_upload("c" * 32, "team/x")]
    batch.insert(0 if failing_first else 1, units.run(duplicate))
    tasks = [asyncio.ensure_future(u) for u in batch]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = 0 if failing_first else 1
    assert isinstance(results[failed], IntegrityError)
    assert [r for i, r in enumerate(results) if i != failed] == [None, None]
    assert await store.get_upload("b" * 32) is not None
    assert await store.get_upload("c" * 32) is not None
    assert "team/half-written" not in await names(store)


async def test_a_failed_commit_fails_every_unit_of_its_batch(store: SqlMetadataStore) -> None:
    units = units_of(store)

    def breaks_the_commit(conn: Connection) -> None:
        # A deferred foreign key: every statement succeeds, the COMMIT is refused.
        conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
        conn.execute(insert(t.uploads).values(id="x" * 32, repo_id=999, started_at=0.0))

    started, release, held = hold_the_thread(units)
    tasks = [asyncio.ensure_future(held)]
    await asyncio.to_thread(started.wait, 10)
    tasks += [
        asyncio.ensure_future(units.run(breaks_the_commit)),
        asyncio.ensure_future(store.create_upload("b" * 32, "team/app")),
        asyncio.ensure_future(store.create_upload("c" * 32, "team/app")),
    ]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] is None
    assert all(isinstance(r, IntegrityError) for r in results[1:]), results
    for upload_id in ("x" * 32, "b" * 32, "c" * 32):
        assert await store.get_upload(upload_id) is None  # no one was told "done" wrongly
    await store.create_upload("d" * 32, "team/app")  # and the writer works again
    assert await store.get_upload("d" * 32) is not None


async def test_a_unit_cancelled_before_it_started_does_not_run(store: SqlMetadataStore) -> None:
    units = units_of(store)
    started, release, held = hold_the_thread(units)
    first = asyncio.ensure_future(held)
    await asyncio.to_thread(started.wait, 10)
    gone = asyncio.ensure_future(store.create_upload("e" * 32, "team/cancelled"))
    kept = asyncio.ensure_future(store.create_upload("f" * 32, "team/kept"))
    await asyncio.sleep(0.05)
    gone.cancel()
    release.set()
    await asyncio.gather(first, kept)
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert await store.get_upload("e" * 32) is None
    assert await store.get_upload("f" * 32) is not None
    assert "team/cancelled" not in await names(store)


async def test_the_async_writer_and_the_units_thread_take_turns(store: SqlMetadataStore) -> None:
    """Both writers of a process share the cross-process writer lock: neither sees the other's
    uncommitted work, and both commit."""
    entered, go_on = asyncio.Event(), asyncio.Event()

    async def async_writer() -> None:
        async with store.writer.begin() as conn:
            await conn.execute(insert(t.repositories).values(name="team/async", created_at=0.0))
            entered.set()
            await go_on.wait()

    task = asyncio.create_task(async_writer())
    await entered.wait()
    unit = asyncio.ensure_future(store.create_upload("g" * 32, "team/unit"))
    await asyncio.sleep(0.1)
    assert not unit.done()  # waits for the writer lock the async transaction holds
    go_on.set()
    await asyncio.gather(task, unit)
    assert {"team/async", "team/unit"} <= await names(store)


async def test_a_locked_database_is_an_outage_not_a_crash(
    store: SqlMetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trustyard.metadata import sqlite

    monkeypatch.setattr(sqlite, "WRITER_WAIT_SECONDS", 0.2)
    lock = Path(f"{units_of(store).engine.url.database}.writer-lock")
    fd = os.open(lock, os.O_RDWR)
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX)  # another process's writer, stuck
        with pytest.raises(MetadataUnavailable) as caught:
            await store.create_upload("h" * 32, "team/app")
        assert "another process kept writing" in caught.value.reason
    finally:
        os.close(fd)
    await store.create_upload("h" * 32, "team/app")
    assert await store.get_upload("h" * 32) is not None


async def test_units_run_in_a_forked_child_on_its_own_thread(store: SqlMetadataStore) -> None:
    """Granian forks workers from a process that may have written already: the child starts
    its own writer thread and connection instead of waiting on the parent's."""
    await store.create_upload("i" * 32, "team/parent")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:
            asyncio.run(store.create_upload("j" * 32, "team/child"))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert await store.get_upload("j" * 32) is not None
    await store.create_upload("k" * 32, "team/parent")  # the parent's thread still works


async def test_a_unit_sees_its_callers_context(store: SqlMetadataStore) -> None:
    """Event URLs and actors come from the request's context variables: a unit built from them
    on the writer thread must see the request's values, not the thread's."""
    import contextvars

    request_host: contextvars.ContextVar[str] = contextvars.ContextVar("host", default="none")

    def read(conn: Connection) -> str:
        return request_host.get()

    async def request(host: str) -> str:
        request_host.set(host)
        return await units_of(store).run(read)

    hosts = [f"registry-{i}.test" for i in range(20)]
    assert await asyncio.gather(*(request(h) for h in hosts)) == hosts


async def test_the_writer_thread_outlives_a_unit_that_raises_anything(
    store: SqlMetadataStore,
) -> None:
    class Escape(BaseException):
        """Not an Exception: must not end the thread every later write waits on."""

    def escapes(conn: Connection) -> None:
        conn.execute(insert(t.repositories).values(name="team/escaped", created_at=0.0))
        raise Escape

    with pytest.raises(Escape):
        await units_of(store).run(escapes)
    await asyncio.wait_for(store.create_upload("l" * 32, "team/app"), 10)
    assert await store.get_upload("l" * 32) is not None
    assert "team/escaped" not in await names(store)


async def test_a_unit_queued_behind_the_close_is_refused_not_left_waiting(
    store: SqlMetadataStore,
) -> None:
    units = units_of(store)
    started, release, held = hold_the_thread(units)
    first = asyncio.ensure_future(held)
    await asyncio.to_thread(started.wait, 10)
    closing = asyncio.ensure_future(units.close())
    await asyncio.sleep(0.05)  # the stop is queued behind the blocker
    late = asyncio.ensure_future(store.create_upload("m" * 32, "team/late"))
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, closing), 10)
    with pytest.raises(MetadataUnavailable):
        await asyncio.wait_for(late, 10)
    await store.create_upload("n" * 32, "team/app")  # a later unit starts the thread again
    assert await store.get_upload("n" * 32) is not None
    assert await store.get_upload("m" * 32) is None
