"""Group commit on the SQLite writer's async transactions (metadata/group_commit.py), on a
real SQLite file.

Concurrent write transactions share COMMITs, yet each keeps the meaning of a transaction: its
own failure undoes only its own statements, and a failed COMMIT fails every unit that shared it.
(The units-of-work thread batches the same way: tests/unit/test_sqlite_units.py.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.exc import IntegrityError

from tests.unit.sqlite_store import (  # store_fixture: the `store` the tests ask for
    assert_uploads,
    repository_of,
    store_fixture,  # noqa: F401
)
from trustyard.metadata import schema as t
from trustyard.metadata.group_commit import GroupCommitEngine
from trustyard.metadata.sql import SqlMetadataStore


def count_commits(store: SqlMetadataStore) -> list[int]:
    commits = [0]

    def on_commit(_conn: Any) -> None:
        commits[0] += 1

    event.listen(store.writer.sync_engine, "commit", on_commit)
    return commits


async def add_upload(store: SqlMetadataStore, upload_id: str, repository: str) -> None:
    """An upload row written in an async transaction on the writer (`begin()`), as the stores
    that are not units of work write."""
    async with store.writer.begin() as conn:
        await conn.execute(
            insert(t.repositories).prefix_with("OR IGNORE").values(name=repository, created_at=0.0)
        )
        repo_id = (
            await conn.execute(
                select(t.repositories.c.id).where(t.repositories.c.name == repository)
            )
        ).scalar_one()
        await conn.execute(insert(t.uploads).values(id=upload_id, repo_id=repo_id, started_at=0.0))


async def test_the_sqlite_writer_groups_commits(store: SqlMetadataStore) -> None:
    assert isinstance(store.writer, GroupCommitEngine)
    commits = count_commits(store)
    ids = [f"{i:032x}" for i in range(100)]
    await asyncio.gather(*(add_upload(store, i, repository_of(i)) for i in ids))
    assert commits[0] < len(ids)  # concurrent units shared COMMITs...
    assert commits[0] >= len(ids) // 64  # ...at most 64 units each
    await assert_uploads(store, ids)


@pytest.mark.parametrize("failing_first", [False, True])
async def test_a_failed_unit_undoes_only_its_own_writes(
    store: SqlMetadataStore, failing_first: bool
) -> None:
    await add_upload(store, "a" * 32, "team/app")

    async def duplicate() -> None:
        async with store.writer.begin() as conn:
            await conn.execute(
                insert(t.repositories).values(name="team/half-written", created_at=0.0)
            )
            await conn.execute(insert(t.uploads).values(id="a" * 32, repo_id=1, started_at=0.0))

    # The batch's first unit runs without a SAVEPOINT, the others each in one: both kinds fail.
    units = [add_upload(store, "b" * 32, "team/app"), add_upload(store, "c" * 32, "team/x")]
    units.insert(0 if failing_first else 1, duplicate())
    results = await asyncio.gather(*units, return_exceptions=True)
    failed = 0 if failing_first else 1
    assert isinstance(results[failed], IntegrityError)
    assert [r for i, r in enumerate(results) if i != failed] == [None, None]
    assert await store.get_upload("b" * 32) is not None
    assert await store.get_upload("c" * 32) is not None
    async with store.reader.connect() as conn:
        names = set((await conn.execute(select(t.repositories.c.name))).scalars())
    assert "team/half-written" not in names  # the failed unit's first statement is gone too


async def test_a_failed_commit_fails_every_unit_of_its_batch(store: SqlMetadataStore) -> None:
    entered = asyncio.Event()
    go_on = asyncio.Event()

    async def breaks_the_commit() -> None:
        # A deferred foreign key: every statement succeeds, the COMMIT is refused.
        async with store.writer.begin() as conn:
            entered.set()
            await go_on.wait()  # the others queue behind this unit and join its batch
            await conn.exec_driver_sql("PRAGMA defer_foreign_keys=ON")
            await conn.execute(insert(t.uploads).values(id="x" * 32, repo_id=999, started_at=0.0))

    async def then(upload_id: str) -> None:
        await entered.wait()
        await add_upload(store, upload_id, "team/app")

    tasks = [
        asyncio.create_task(breaks_the_commit()),
        asyncio.create_task(then("b" * 32)),
        asyncio.create_task(then("c" * 32)),
    ]
    await entered.wait()
    for _ in range(20):
        await asyncio.sleep(0)
    go_on.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, IntegrityError) for r in results), results
    for upload_id in ("x" * 32, "b" * 32, "c" * 32):
        assert await store.get_upload(upload_id) is None  # no one was told "done" wrongly
    await add_upload(store, "d" * 32, "team/app")  # and the writer works again
    assert await store.get_upload("d" * 32) is not None


async def test_a_cancelled_unit_hands_the_writer_on(store: SqlMetadataStore) -> None:
    entered = asyncio.Event()

    async def stuck() -> None:
        async with store.writer.begin() as conn:
            await conn.execute(insert(t.repositories).values(name="team/cancelled", created_at=0.0))
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(stuck())
    await entered.wait()
    waiting = asyncio.create_task(add_upload(store, "e" * 32, "team/app"))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(waiting, 10)
    assert await store.get_upload("e" * 32) is not None
    async with store.reader.connect() as conn:
        names = set((await conn.execute(select(t.repositories.c.name))).scalars())
    assert "team/cancelled" not in names


async def test_a_unit_cancelled_as_the_turn_reaches_it_still_gets_the_batch_committed(
    store: SqlMetadataStore,
) -> None:
    # A hands the turn to B (waiting) instead of committing; B is cancelled before it runs:
    # A's work must still be committed, not wait for a writer that may never come.
    state_of = store.writer._current  # type: ignore[attr-defined]
    go_on = asyncio.Event()

    async def first() -> None:
        async with store.writer.begin() as conn:
            await conn.execute(insert(t.repositories).values(name="team/first", created_at=0.0))
            await go_on.wait()

    a = asyncio.create_task(first())
    while state_of().batch is None:
        await asyncio.sleep(0)
    b = asyncio.create_task(add_upload(store, "f" * 32, "team/app"))
    while state_of().waiting == 0:
        await asyncio.sleep(0)
    go_on.set()
    while state_of().turn.locked():  # A released the turn to B without committing
        await asyncio.sleep(0)
    b.cancel()
    await asyncio.wait_for(a, 10)
    async with store.reader.connect() as conn:
        names = set((await conn.execute(select(t.repositories.c.name))).scalars())
    assert "team/first" in names
