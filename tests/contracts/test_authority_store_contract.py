"""The authority-statement store on every metadata backend: idempotent adds, a conflicting id
refused, pages in issue order after `last`, lookups by id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.metadata.authority_base import StatementConflict, StoredStatement, UnknownStatement
from trustyard.metadata.authority_sql import SqlAuthorityStore
from trustyard.wiring import open_database


@pytest.fixture
async def store(target: Path | str) -> AsyncIterator[SqlAuthorityStore]:
    database = await open_database(target, create=True)
    yield database.authority
    await database.close()


def _statement(sid: str, issued: float, kind: str = "grant") -> StoredStatement:
    return StoredStatement(sid, kind, "KEY:" + sid, issued, f"jws-{sid}".encode())


async def test_add_is_idempotent_and_ids_do_not_collide(store: SqlAuthorityStore) -> None:
    a = _statement("a", 10.0)
    assert await store.add_statement(a) is True
    assert await store.add_statement(a) is False
    with pytest.raises(StatementConflict):
        await store.add_statement(StoredStatement("a", "grant", None, 10.0, b"other bytes"))
    assert await store.get_statement("a") == a
    assert await store.get_statement("missing") is None
    assert await store.count_statements() == 1


async def test_pages_in_issue_order(store: SqlAuthorityStore) -> None:
    # inserted out of order; equal issue times fall back to the id
    for sid, issued in (("c", 30.0), ("a", 10.0), ("b2", 20.0), ("b1", 20.0), ("d", 40.0)):
        await store.add_statement(_statement(sid, issued, "revoke" if sid == "d" else "grant"))
    first = await store.list_statements(2, None)
    assert [s.id for s in first] == ["a", "b1"]
    second = await store.list_statements(2, "b1")
    assert [s.id for s in second] == ["b2", "c"]
    third = await store.list_statements(2, "c")
    assert [(s.id, s.type) for s in third] == [("d", "revoke")]
    assert await store.list_statements(2, "d") == []
    with pytest.raises(UnknownStatement):
        await store.list_statements(2, "nope")
