"""The audit store on SQLite and PostgreSQL: batches, filters, newest-first order, limits, cut
fields, the trust table bridge and purge by age."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.metadata.audit_base import AuditEntry, AuditQuery
from trustyard.trust.store import AuditEvent
from trustyard.wiring import open_database
from trustyard.wiring.database import Database


@pytest.fixture
async def database(target: Path | str) -> AsyncIterator[Database]:
    db = await open_database(target, create=True)
    yield db
    await db.close()


NOW = time.time()
ENTRIES = [
    AuditEntry("push", NOW - 300, actor="alice", client="10.0.0.1", repository="a/app",
               digest="sha256:" + "1" * 64, tag="v1", detail={"media_type": "x"}),
    AuditEntry("pull", NOW - 200, actor="bob", client="10.0.0.2", repository="a/app",
               digest="sha256:" + "1" * 64, tag="v1"),
    AuditEntry("delete", NOW - 100, actor="alice", repository="b/app", outcome="not_found"),
]  # fmt: skip


async def test_append_and_query_with_filters(database: Database) -> None:
    store = database.audit
    await store.append(ENTRIES)
    await store.append([])
    assert await store.query(AuditQuery()) == list(reversed(ENTRIES))
    assert await store.query(AuditQuery(actor="alice")) == [ENTRIES[2], ENTRIES[0]]
    assert await store.query(AuditQuery(repository="a/app", action="pull")) == [ENTRIES[1]]
    assert await store.query(AuditQuery(since=NOW - 150)) == [ENTRIES[2]]
    assert await store.query(AuditQuery(limit=1)) == [ENTRIES[2]]
    assert await store.query(AuditQuery(action="admin")) == []


async def test_overlong_fields_are_cut_not_refused(database: Database) -> None:
    long = AuditEntry("login", NOW, actor="x" * 1000, client="c" * 100, repository="r" * 1000,
                      tag="t" * 500, outcome="failure",
                      detail={"scopes": ["repository:a:pull"] * 1000})  # fmt: skip
    await database.audit.append([long])
    [got] = await database.audit.query(AuditQuery())
    assert (len(got.actor), len(got.client), len(got.repository), len(got.tag)) == (
        255, 64, 255, 128,
    )  # fmt: skip
    assert set(got.detail) == {"truncated"} and len(got.detail["truncated"]) < 8192


async def test_trust_rows_are_bridged_and_purge_keeps_trust_history(database: Database) -> None:
    await database.audit.append(ENTRIES)
    await database.trust.record_audit(
        AuditEvent("policy_push", "a/app", "carol", {"allowed": False, "reference": "v2"})
    )
    await database.trust.record_audit(AuditEvent("publish", "a/app", "carol", {"version": 3}))
    policy = await database.audit.query(AuditQuery(action="policy"))
    assert [(e.actor, e.repository, e.tag, e.outcome) for e in policy] == [
        ("carol", "a/app", "v2", "denied")
    ]
    [trust] = await database.audit.query(AuditQuery(action="trust", actor="carol"))
    assert trust.repository == "a/app" and trust.detail == {"event": "publish", "version": 3}
    assert len(await database.audit.query(AuditQuery(repository="a/app"))) == 4
    assert await database.audit.purge(NOW - 150) == 2
    assert await database.audit.purge(time.time() + 1) == 2  # the last entry, the decision
    assert [e.action for e in await database.audit.query(AuditQuery())] == ["trust"]
