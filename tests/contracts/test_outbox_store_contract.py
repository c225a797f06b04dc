"""The event outbox store on SQLite and PostgreSQL: leases, retries, dead letters, purges."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy.exc import DBAPIError

from trustyard.metadata.events_base import OutboxEntry
from trustyard.oci.digest import Digest
from trustyard.trust.store import AuditEvent, Change, StaleVersion, TufFile
from trustyard.wiring import Database, open_database


@pytest.fixture
async def db(target: Path | str) -> AsyncIterator[Database]:
    database = await open_database(target, create=True)
    yield database
    await database.close()


def entries(n: int, endpoint: str = "hook") -> list[OutboxEntry]:
    return [OutboxEntry(f"e{i}", endpoint, "push", "r", f'{{"id":"e{i}"}}') for i in range(n)]


async def test_claim_leases_rows_to_one_owner(db: Database) -> None:
    store = db.events
    await store.enqueue(entries(3))
    now = time.time()
    first = await store.claim("a", now, 60, 10)
    assert [r.event_id for r in first] == ["e0", "e1", "e2"]
    assert all(r.state == "pending" and r.attempts == 0 for r in first)
    assert await store.claim("b", now, 60, 10) == []  # leased to a
    # A lease that ran out (its holder died) is claimable again: at-least-once.
    again = await store.claim("b", now + 61, 60, 10)
    assert len(again) == 3
    # The first owner's late marks no longer apply: the rows are b's now.
    await store.delivered([r.id for r in first], "a", now)
    assert (await store.counts())["pending"] == 3
    await store.release("b")  # b shuts down: its rows are claimable at once
    again = await store.claim("c", now + 62, 60, 10)  # b's lease would have run to now + 121
    assert len(again) == 3
    await store.delivered([r.id for r in again], "c", now)
    assert await store.counts() == {"pending": 0, "delivered": 3, "dead": 0}
    assert await store.claim("c", now + 1000, 60, 10) == []


async def test_failure_backs_off_then_dead_letters_and_retry_requeues(db: Database) -> None:
    store = db.events
    await store.enqueue(entries(2))
    now = time.time()
    rows = await store.claim("a", now, 60, 10)
    await store.failed([rows[0].id], "a", "HTTP 500: boom", now + 30, dead=False)
    await store.failed([rows[1].id], "a", "HTTP 500: boom", now + 30, dead=True)
    assert await store.claim("a", now + 1, 60, 10) == []  # not due before the back-off
    due = await store.claim("a", now + 31, 60, 10)
    assert [(r.id, r.attempts, r.last_error) for r in due] == [(rows[0].id, 1, "HTTP 500: boom")]
    dead = await store.list("dead", 10)
    assert [r.id for r in dead] == [rows[1].id] and dead[0].attempts == 1
    assert await store.retry([rows[0].id], now) == 0  # pending, not dead: untouched
    assert await store.retry(None, now + 40) == 1
    requeued = await store.list("pending", 10)
    assert {r.id for r in requeued} == {rows[0].id, rows[1].id}
    assert next(r for r in requeued if r.id == rows[1].id).attempts == 0


async def test_list_newest_first_and_purge_by_state_and_age(db: Database) -> None:
    store = db.events
    await store.enqueue(entries(3))
    now = time.time()
    rows = await store.claim("a", now, 60, 10)
    await store.delivered([rows[0].id], "a", now)
    await store.failed([rows[1].id], "a", "x", now, dead=True)
    listed = await store.list(None, 10)
    assert [r.id for r in listed] == sorted((r.id for r in rows), reverse=True)
    assert await store.purge(["delivered"], now - 3600) == 0  # not old enough
    assert await store.purge(["delivered"], now + 1) == 1
    assert await store.counts() == {"pending": 1, "delivered": 0, "dead": 1}
    assert await store.purge(["dead", "pending"], now + 1) == 2
    assert await store.list(None, 10) == []


async def test_rows_commit_with_the_manifest_write_or_not_at_all(db: Database) -> None:
    """A manifest put that fails (a missing blob) leaves no event behind."""
    from tests.contracts.test_metadata_contract import link_image_blobs, manifest_bytes
    from trustyard.metadata.errors import MissingReference
    from trustyard.oci.manifest import parse_manifest

    raw = manifest_bytes("events")
    manifest = parse_manifest(raw, None)
    with pytest.raises(MissingReference):
        await db.metadata.put_manifest("r", manifest, raw, ["v1"], events=entries(1))
    assert await db.events.list(None, 10) == []
    await link_image_blobs(db.metadata, "r")
    await db.metadata.put_manifest("r", manifest, raw, ["v1"], events=entries(1))
    assert [r.event_id for r in await db.events.list(None, 10)] == ["e0"]
    assert not await db.metadata.delete_tag("r", "nope", events=entries(1, "other"))
    assert await db.metadata.delete_tag("r", "v1", events=entries(1, "other"))
    assert [r.endpoint for r in await db.events.list(None, 10)] == ["other", "hook"]


async def test_two_replicas_claim_each_row_once(target: Path | str) -> None:
    """Two databases (two replicas' pools) claiming at once never share a row."""
    one = await open_database(target, create=True)
    two = await open_database(target, create=True)
    try:
        await one.events.enqueue(entries(200))
        now = time.time()
        seen: dict[str, list[int]] = {"a": [], "b": []}

        async def drain(db: Database, owner: str) -> None:
            while rows := await db.events.claim(owner, now, 60, 7):
                seen[owner] += [r.id for r in rows]
                await db.events.delivered([r.id for r in rows], owner, now)

        await asyncio.gather(drain(one, "a"), drain(two, "b"))
        assert len(seen["a"]) + len(seen["b"]) == 200
        assert not set(seen["a"]) & set(seen["b"])
        assert (await one.events.counts())["delivered"] == 200
    finally:
        await one.close()
        await two.close()


def broken(event_id: str = "bad") -> OutboxEntry:
    """A row the database refuses (NOT NULL payload): the write it rides with must roll back."""
    return OutboxEntry(event_id, "hook", "delete", "r", cast(str, None))


async def test_blob_delete_rows_commit_with_the_unlink(db: Database) -> None:
    """Issue 21: a blob delete's event is in the unlink's transaction: no link, no event; an
    event that cannot be written leaves the link in place (no change without its event)."""
    from tests.contracts.test_metadata_contract import CONFIG, link_image_blobs

    digest = Digest.of(CONFIG)
    assert not await db.metadata.unlink_blob("r", digest, events=entries(1))
    await link_image_blobs(db.metadata, "r")
    with pytest.raises(DBAPIError):
        await db.metadata.unlink_blob("r", digest, events=[broken()])
    assert await db.metadata.blob_size("r", digest) == len(CONFIG)
    assert await db.events.list(None, 10) == []
    assert await db.metadata.unlink_blob("r", digest, events=entries(1))
    assert await db.metadata.blob_size("r", digest) is None
    assert [r.event_id for r in await db.events.list(None, 10)] == ["e0"]
    assert not await db.metadata.unlink_blob("r", digest, events=entries(1, "again"))
    assert len(await db.events.list(None, 10)) == 1


async def test_signature_rows_commit_with_the_signature(db: Database) -> None:
    from tests.contracts.test_metadata_contract import link_image_blobs, manifest_bytes
    from trustyard.oci.manifest import parse_manifest

    raw = manifest_bytes("sig-events")
    manifest = parse_manifest(raw, None)
    await link_image_blobs(db.metadata, "r")
    await db.metadata.put_manifest("r", manifest, raw, ["v1"])
    sig = (f"{manifest.digest}@1", b"signature bytes")

    def admit(_: object) -> None:
        return None

    with pytest.raises(DBAPIError):
        await db.signatures.add_signature("r", manifest.digest, *sig, admit, events=[broken()])
    assert await db.signatures.list_signatures("r", manifest.digest) == []
    assert await db.signatures.add_signature("r", manifest.digest, *sig, admit, events=entries(1))
    # the same signature again stores nothing and records nothing
    assert not await db.signatures.add_signature(
        "r", manifest.digest, *sig, admit, events=entries(1, "again")
    )
    assert [(r.event_id, r.endpoint) for r in await db.events.list(None, 10)] == [("e0", "hook")]


async def test_trust_publish_rows_commit_with_the_publish(db: Database) -> None:
    gun = "example.com/r"
    data = b'{"signed": {}}'

    def publish(version: int, events: list[OutboxEntry]) -> Awaitable[None]:
        sha = hashlib.sha256(data).hexdigest()
        return db.trust.publish(
            gun,
            [TufFile(gun, "targets", version, sha, data)],
            Change(0, 0.0, gun, version, sha, "update"),
            AuditEvent("publish", gun, "alice"),
            events,
        )

    # the store reads any integrity error as a concurrent publish: nothing of it is stored
    with pytest.raises(StaleVersion):
        await publish(1, [broken()])
    assert await db.trust.get_file(gun, "targets") is None
    await publish(1, entries(1))
    with pytest.raises(StaleVersion):  # refused: nothing stored, no event
        await publish(1, entries(1, "stale"))
    assert [(r.event_id, r.endpoint) for r in await db.events.list(None, 10)] == [("e0", "hook")]
