"""The trust store's insert-if-absent of a GUN's first server key, on SQLite and PostgreSQL.

Two store instances on one database stand for two workers (SQLite) or two replicas
(PostgreSQL): each has its own engines and connections, as separate processes would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.crypto.notary_keys import PrivateKey
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.metadata.trust_sql import SqlTrustStore
from trustyard.oci.digest import Digest
from trustyard.trust.store import AuditEvent, ServerKey
from trustyard.wiring import open_database

GUN = "example.com/team/first"


@pytest.fixture
async def stores(target: Path | str) -> AsyncIterator[list[SqlTrustStore]]:
    opened: list[SqlMetadataStore] = [(await open_database(target, create=True)).metadata]
    opened.append((await open_database(target, create=False)).metadata)
    yield [SqlTrustStore(m.reader, m.writer) for m in opened]
    for m in opened:
        await m.close()


def new_key(role: str = "timestamp", gun: str = GUN) -> ServerKey:
    key = PrivateKey.generate("ed25519")
    return ServerKey(
        gun=gun,
        role=role,
        key_id=key.public.key_id,
        algorithm=key.public.keytype,
        public=key.public.public,
        private=key.encrypt(b"pw"),
        created_at=time.time(),
    )


async def test_the_first_key_is_stored_and_returned(stores: list[SqlTrustStore]) -> None:
    store = stores[0]
    first = new_key()
    assert await store.add_first_server_key(first) == first
    second = new_key()
    assert await store.add_first_server_key(second) == first  # already there: not stored
    assert await store.server_keys(GUN, "timestamp") == [first]
    # Other roles and GUNs are independent.
    snapshot = new_key("snapshot")
    assert await store.add_first_server_key(snapshot) == snapshot
    other = new_key(gun="example.com/team/other")
    assert await store.add_first_server_key(other) == other
    # A rotation adds a key; a later first-key attempt returns the newest and adds nothing.
    rotated = new_key()
    await store.add_server_key(rotated, AuditEvent("rotate_key", GUN, "alice"))
    assert await store.add_first_server_key(new_key()) == rotated
    assert [k.key_id for k in await store.server_keys(GUN, "timestamp")] == [
        rotated.key_id,
        first.key_id,
    ]


async def test_concurrent_first_keys_from_two_instances_agree(
    stores: list[SqlTrustStore],
) -> None:
    for round_ in range(5):
        gun = f"example.com/race/{round_}"
        candidates = [new_key(gun=gun) for _ in range(32)]
        winners = await asyncio.gather(
            *(stores[i % 2].add_first_server_key(k) for i, k in enumerate(candidates))
        )
        assert len({w.key_id for w in winners}) == 1, winners
        assert winners[0].key_id in {k.key_id for k in candidates}
        for store in stores:
            assert [k.key_id for k in await store.server_keys(gun, "timestamp")] == [
                winners[0].key_id
            ]


async def test_an_audit_event_on_its_own_is_kept_and_cut_to_fit(
    stores: list[SqlTrustStore],
) -> None:
    """`AuditSink.record_audit`: what the registry policy writes (trust/server/policy_audit.py)."""
    long_gun = "example.com/" + "x" * 300
    detail = {"allowed": False, "digest": Digest("sha256", "a" * 64)}  # not JSON: str() it
    await stores[0].record_audit(AuditEvent("policy_pull", GUN, "registry-policy", detail))
    await stores[1].record_audit(AuditEvent("p" * 40, long_gun, "registry-policy"))
    [(_, event)] = await stores[1].audit_events(GUN)
    assert (event.action, event.actor) == ("policy_pull", "registry-policy")
    assert event.detail == {"allowed": False, "digest": "sha256:" + "a" * 64}
    [(_, cut)] = await stores[0].audit_events(long_gun[:255])
    assert cut.action == "p" * 32
