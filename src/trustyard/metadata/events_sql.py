"""The event outbox on SQL (SQLite and PostgreSQL): the `event_outbox` table and its store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from trustyard.metadata.events_base import OutboxEntry, OutboxRow, OutboxState
from trustyard.metadata.schema import metadata

event_outbox = Table(
    "event_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("endpoint", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", Float, nullable=True),
    Index("ix_event_outbox_due", "state", "next_attempt_at"),
)

_o = event_outbox.c


def insert_outbox(conn: Connection, entries: Sequence[OutboxEntry], now: float) -> None:
    """Insert outbox rows in the caller's transaction (the change they report commits with them).

    Synchronous (a unit of work's statement, metadata/units.py); from an async transaction:
    `await conn.run_sync(insert_outbox, entries, now)`."""
    if not entries:
        return
    conn.execute(
        insert(event_outbox),
        [
            {
                "event_id": e.event_id,
                "endpoint": e.endpoint,
                "action": e.action,
                "repository": e.repository,
                "payload": e.payload,
                "state": "pending",
                "attempts": 0,
                "created_at": now,
                "next_attempt_at": now,
            }
            for e in entries
        ],
    )


def _row(r: Any) -> OutboxRow:
    return OutboxRow(
        id=r.id,
        event_id=r.event_id,
        endpoint=r.endpoint,
        action=r.action,
        repository=r.repository,
        payload=r.payload,
        state=r.state,
        attempts=r.attempts,
        created_at=r.created_at,
        next_attempt_at=r.next_attempt_at,
        last_error=r.last_error,
    )


_COLUMNS = (
    _o.id,
    _o.event_id,
    _o.endpoint,
    _o.action,
    _o.repository,
    _o.payload,
    _o.state,
    _o.attempts,
    _o.created_at,
    _o.next_attempt_at,
    _o.last_error,
)


class SqlOutboxStore:
    """Implements `OutboxStore` on the database's engine pair."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer
        self._postgres = writer.dialect.name == "postgresql"

    async def enqueue(self, entries: Sequence[OutboxEntry]) -> None:
        if not entries:
            return
        async with self.writer.begin() as conn:
            await conn.run_sync(insert_outbox, entries, time.time())

    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[OutboxRow]:
        due = (
            select(_o.id)
            .where(
                _o.state == "pending",
                _o.next_attempt_at <= now,
                or_(_o.lease_until.is_(None), _o.lease_until < now),
            )
            .order_by(_o.id)
            .limit(limit)
        )
        # A read first: an idle outbox (the usual case) costs no write transaction, which on
        # SQLite would queue behind, and hold up, pushes.
        async with self.reader.connect() as conn:
            if (await conn.execute(due.with_only_columns(_o.id).limit(1))).first() is None:
                return []
        async with self.writer.begin() as conn:
            if self._postgres:
                # Rows another replica is claiming right now are skipped, not waited for.
                due = due.with_for_update(skip_locked=True)
            ids = list((await conn.execute(due)).scalars())
            if not ids:
                return []
            # The conditions again: on SQLite this UPDATE is the claim (writers are serialised,
            # so a row leased meanwhile no longer matches); on PostgreSQL the rows are locked.
            await conn.execute(
                update(event_outbox)
                .where(
                    _o.id.in_(ids),
                    _o.state == "pending",
                    or_(_o.lease_until.is_(None), _o.lease_until < now),
                )
                .values(lease_owner=owner, lease_until=now + lease_seconds)
            )
            rows = await conn.execute(
                select(*_COLUMNS).where(_o.id.in_(ids), _o.lease_owner == owner).order_by(_o.id)
            )
            return [_row(r) for r in rows]

    async def release(self, owner: str) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(
                update(event_outbox)
                .where(_o.lease_owner == owner, _o.state == "pending")
                .values(lease_owner=None, lease_until=None)
            )

    async def delivered(self, ids: Sequence[int], owner: str, now: float) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(
                update(event_outbox)
                .where(_o.id.in_(list(ids)), _o.lease_owner == owner, _o.state == "pending")
                .values(
                    state="delivered",
                    delivered_at=now,
                    attempts=_o.attempts + 1,
                    lease_owner=None,
                    lease_until=None,
                    last_error=None,
                )
            )

    async def failed(
        self, ids: Sequence[int], owner: str, error: str, retry_at: float, dead: bool
    ) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(
                update(event_outbox)
                .where(_o.id.in_(list(ids)), _o.lease_owner == owner, _o.state == "pending")
                .values(
                    state="dead" if dead else "pending",
                    attempts=_o.attempts + 1,
                    next_attempt_at=retry_at,
                    lease_owner=None,
                    lease_until=None,
                    last_error=error[:1000],
                )
            )

    async def list(self, state: OutboxState | None, limit: int) -> list[OutboxRow]:
        query = select(*_COLUMNS).order_by(_o.id.desc()).limit(limit)
        if state is not None:
            query = query.where(_o.state == state)
        async with self.reader.connect() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def retry(self, ids: Sequence[int] | None, now: float) -> int:
        query = (
            update(event_outbox)
            .where(_o.state == "dead")
            .values(state="pending", attempts=0, next_attempt_at=now, lease_owner=None)
        )
        if ids is not None:
            query = query.where(_o.id.in_(list(ids)))
        async with self.writer.begin() as conn:
            return int((await conn.execute(query)).rowcount)

    async def purge(self, states: Sequence[OutboxState], before: float) -> int:
        query = delete(event_outbox).where(_o.state.in_(list(states)), _o.created_at < before)
        async with self.writer.begin() as conn:
            return int((await conn.execute(query)).rowcount)

    async def counts(self) -> dict[str, int]:
        query = select(_o.state, func.count()).group_by(_o.state)
        async with self.reader.connect() as conn:
            found = {state: int(n) for state, n in await conn.execute(query)}
        return {state: found.get(state, 0) for state in ("pending", "delivered", "dead")}
