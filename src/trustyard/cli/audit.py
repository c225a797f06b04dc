"""`trustyard audit`: read the audit log (newest first), filtered by time, actor, repository and
action; `--json` prints one JSON array of entries."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from trustyard.cli.common import ConfigOption, DataDirOption, open_store_or_exit, settings_or_exit
from trustyard.config import Settings
from trustyard.metadata.audit_base import ACTIONS, AuditEntry, AuditQuery
from trustyard.metadata.errors import MetadataError
from trustyard.wiring import open_services

_AGO = re.compile(r"^(\d{1,9})([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_LIMIT = 100_000


def parse_since(value: str, now: float | None = None) -> float:
    """`2h`, `30m`, `7d` (ago), or an ISO 8601 date or date-time (UTC unless it says)."""
    now = time.time() if now is None else now
    m = _AGO.match(value.strip())
    if m:
        return now - int(m.group(1)) * _UNIT[m.group(2)]
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"--since {value[:40]!r}: give an age such as 30m, 2h, 7d or a date such as "
            "2026-12-01 or 2026-12-01T08:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


async def _query(settings: Settings, query: AuditQuery) -> list[AuditEntry]:
    async with await open_services(settings, repositories=False) as services:
        return await services.database.audit.query(query)


def _line(e: AuditEntry) -> str:
    when = dt.datetime.fromtimestamp(e.at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    where = e.repository + (f":{e.tag}" if e.tag else "") + (f"@{e.digest}" if e.digest else "")
    extra = json.dumps(dict(e.detail), sort_keys=True) if e.detail else ""
    fields = [when, e.action, e.outcome, e.actor, e.client or "-", where or "-", extra]
    return "\t".join(fields).rstrip()


def audit(
    since: Annotated[
        str | None, typer.Option(help="Only entries newer than this: 30m, 2h, 7d or a date.")
    ] = None,
    actor: Annotated[
        str | None, typer.Option(help="Only this actor (user, robot, token sub).")
    ] = None,
    repository: Annotated[str | None, typer.Option(help="Only this repository.")] = None,
    action: Annotated[
        str | None, typer.Option(help=f"Only this action: {', '.join(ACTIONS)}.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many entries (newest first).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Who pushed, pulled, deleted, logged in, was granted what, and what policy and trust did."""
    settings = settings_or_exit(config, data_dir=data_dir)
    try:
        start = parse_since(since) if since is not None else None
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if action is not None and action not in ACTIONS:
        typer.echo(f"error: --action {action[:40]!r} is not one of {', '.join(ACTIONS)}", err=True)
        raise typer.Exit(2)
    if not 1 <= limit <= MAX_LIMIT:
        typer.echo(f"error: --limit must be between 1 and {MAX_LIMIT}", err=True)
        raise typer.Exit(2)
    open_store_or_exit(settings, "audit")
    query = AuditQuery(since=start, actor=actor, repository=repository, action=action, limit=limit)
    try:
        entries = asyncio.run(_query(settings, query))
    except (OSError, SQLAlchemyError, MetadataError) as exc:
        typer.echo(f"error: cannot read the audit log: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in entries], indent=2))
        return
    for entry in entries:
        typer.echo(_line(entry))
