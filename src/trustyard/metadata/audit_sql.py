"""The audit log table and the SQL `AuditStore` (metadata.audit_base).

Rows are appended in batches (one transaction per flush of the server's recorder). Reading
bridges the trust store's own audit table (`trust_audit`: publishes, deletes, key rotations and
the registry policy's decisions), so `trustyard audit` shows one log without either writer
recording anything twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text, delete, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

from trustyard.metadata.audit_base import AuditEntry, AuditQuery
from trustyard.metadata.copy_base import CopyResult
from trustyard.metadata.schema import metadata
from trustyard.metadata.trust_sql import trust_audit
from trustyard.metadata.units import unit_writer

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", Float, nullable=False),
    Column("action", String(16), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("client", String(64), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("digest", String(160), nullable=False),
    Column("tag", String(128), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_audit_log_created", "created_at"),
    Index("ix_audit_log_repository", "repository", "created_at"),
)

_POLICY_PREFIX = "policy_"


def _row(entry: AuditEntry) -> dict[str, Any]:
    return {
        "created_at": entry.at,
        "action": entry.action[:16],
        "actor": entry.actor[:255],
        "client": entry.client[:64],
        "repository": entry.repository[:255],
        "digest": entry.digest[:160],
        "tag": entry.tag[:128],
        "outcome": entry.outcome[:16],
        "detail": _detail(entry),
    }


MAX_DETAIL = 8192


def _detail(entry: AuditEntry) -> str:
    """The detail as JSON; an over-long one is kept as a cut string, still valid JSON."""
    text = json.dumps(dict(entry.detail), sort_keys=True, default=str)
    if len(text) <= MAX_DETAIL:
        return text
    return json.dumps({"truncated": text[: MAX_DETAIL - 100]})


def _trust_entry(row: Any) -> AuditEntry:
    """A trust_audit row as an audit entry: policy decisions as `policy`, the rest `trust`."""
    try:
        detail = json.loads(row.detail)
    except ValueError:
        detail = {"raw": row.detail}
    if not isinstance(detail, dict):
        detail = {"value": detail}
    if row.action.startswith(_POLICY_PREFIX):
        allowed = detail.get("allowed")
        return AuditEntry(
            "policy",
            row.created_at,
            actor=row.actor,
            client=str(detail.get("client") or ""),
            repository=row.gun,
            digest=str(detail.get("digest") or ""),
            tag=str(detail.get("reference") or ""),
            outcome="allowed" if allowed else "denied" if allowed is not None else "success",
            detail={"event": row.action, **detail},
        )
    return AuditEntry(
        "trust",
        row.created_at,
        actor=row.actor,
        repository=row.gun,
        detail={"event": row.action, **detail},
    )


class SqlAuditStore:
    """Implements `AuditStore` on the metadata engines."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer
        self.units = unit_writer(writer)

    async def append(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        rows = [_row(e) for e in entries]

        def unit(conn: Connection) -> None:
            conn.execute(insert(audit_log), rows)

        await self.units.run(unit)

    def _own(self, q: AuditQuery) -> Select[Any]:
        c = audit_log.c
        query = select(audit_log)
        if q.since is not None:
            query = query.where(c.created_at >= q.since)
        if q.actor is not None:
            query = query.where(c.actor == q.actor)
        if q.repository is not None:
            query = query.where(c.repository == q.repository)
        if q.action is not None:
            query = query.where(c.action == q.action)
        return query.order_by(c.created_at.desc(), c.id.desc()).limit(q.limit)

    def _trust(self, q: AuditQuery) -> Select[Any] | None:
        c = trust_audit.c
        query = select(trust_audit)
        if q.action == "policy":
            query = query.where(c.action.startswith(_POLICY_PREFIX))
        elif q.action == "trust":
            query = query.where(~c.action.startswith(_POLICY_PREFIX))
        elif q.action is not None:
            return None
        if q.since is not None:
            query = query.where(c.created_at >= q.since)
        if q.actor is not None:
            query = query.where(c.actor == q.actor)
        if q.repository is not None:
            query = query.where(c.gun == q.repository)
        return query.order_by(c.created_at.desc(), c.id.desc()).limit(q.limit)

    async def query(self, query: AuditQuery) -> list[AuditEntry]:
        async with self.reader.connect() as conn:
            own = [
                AuditEntry(
                    r.action,
                    r.created_at,
                    actor=r.actor,
                    client=r.client,
                    repository=r.repository,
                    digest=r.digest,
                    tag=r.tag,
                    outcome=r.outcome,
                    detail=json.loads(r.detail),
                )
                for r in (await conn.execute(self._own(query))).all()
            ]
            trust_query = self._trust(query)
            bridged = (
                [_trust_entry(r) for r in (await conn.execute(trust_query)).all()]
                if trust_query is not None
                else []
            )
        merged = sorted(own + bridged, key=lambda e: e.at, reverse=True)
        return merged[: query.limit]

    async def purge(self, before: float) -> int:
        """Old entries, and old policy decisions of the trust table; trust publishes, deletes and
        rotations stay (they are the collections' signing history, not operational noise)."""
        async with self.writer.begin() as conn:
            own = await conn.execute(delete(audit_log).where(audit_log.c.created_at < before))
            policy = await conn.execute(
                delete(trust_audit).where(
                    trust_audit.c.created_at < before,
                    trust_audit.c.action.startswith(_POLICY_PREFIX),
                )
            )
        return int(own.rowcount or 0) + int(policy.rowcount or 0)


_COPY_BATCH = 500


async def copy_audit(source: AsyncEngine, target: AsyncEngine, result: CopyResult) -> None:
    """`trustyard migrate-storage`: entries the target lacks (equal in every column but the
    id), oldest first, in one target transaction; a second run copies nothing."""
    columns = [c for c in audit_log.c if c.name != "id"]
    tally = result.tally("audit_log")
    async with source.connect() as src, target.begin() as dst:
        there = {tuple(row) for row in await dst.execute(select(*columns))}
        batch: list[dict[str, Any]] = []
        for row in await src.execute(select(*columns).order_by(audit_log.c.id)):
            if tuple(row) in there:
                tally.present += 1
                continue
            batch.append(dict(row._mapping))
            tally.copied += 1
            if len(batch) >= _COPY_BATCH:
                await dst.execute(insert(audit_log), batch)
                batch = []
        if batch:
            await dst.execute(insert(audit_log), batch)
