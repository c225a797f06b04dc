"""`trustyard events list|retry|purge`: the webhook outbox, for operators.

Safe beside a running server: retry only re-queues dead rows (a deliverer picks them up on its
next pass); purge deletes rows in the states asked for.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from trustyard.cli.common import (
    ConfigOption,
    DataDirOption,
    open_store_or_exit,
    settings_or_exit,
    store_name,
)
from trustyard.config import Settings
from trustyard.metadata.errors import MetadataError
from trustyard.metadata.events_base import STATES, OutboxRow, OutboxState, OutboxStore
from trustyard.wiring import open_services

app = typer.Typer(
    help="The webhook event outbox: list, retry dead events, purge.", no_args_is_help=True
)

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _run(settings: Settings, job: Callable[[OutboxStore], Awaitable[T]]) -> T:
    async def main() -> T:
        async with await open_services(settings, repositories=False) as services:
            return await job(services.database.events)

    open_store_or_exit(settings, "events")
    try:
        return asyncio.run(main())
    except (OSError, SQLAlchemyError, MetadataError) as exc:
        typer.echo(f"error: cannot open the store at {store_name(settings)}: {exc}", err=True)
        raise typer.Exit(1) from None


def _state(value: str | None) -> OutboxState | None:
    if value is None:
        return None
    if value not in STATES:
        typer.echo(f"error: --state must be one of {', '.join(STATES)}, not {value!r}", err=True)
        raise typer.Exit(2)
    return value


def _when(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_json(row: OutboxRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "event_id": row.event_id,
        "endpoint": row.endpoint,
        "action": row.action,
        "repository": row.repository,
        "state": row.state,
        "attempts": row.attempts,
        "created_at": _when(row.created_at),
        "next_attempt_at": _when(row.next_attempt_at),
        "last_error": row.last_error,
        "event": json.loads(row.payload),
    }


@app.command("list")
def list_events(
    state: Annotated[
        str | None, typer.Option(help="Only rows in this state: pending, delivered or dead.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Outbox rows, newest first, with the counts by state."""
    settings = settings_or_exit(config, data_dir=data_dir)
    wanted = _state(state)

    async def job(store: OutboxStore) -> tuple[list[OutboxRow], dict[str, int]]:
        return await store.list(wanted, limit), await store.counts()

    rows, counts = _run(settings, job)
    if as_json:
        typer.echo(json.dumps({"counts": counts, "events": [_to_json(r) for r in rows]}, indent=2))
        return
    for r in rows:
        line = (
            f"{r.id}\t{r.state}\t{r.endpoint}\t{r.action}\t{r.repository}\t"
            f"attempts={r.attempts}\t{_when(r.created_at)}"
        )
        if r.state == "pending" and r.attempts:
            line += f"\tnext={_when(r.next_attempt_at)}"
        if r.last_error and r.state != "delivered":
            line += f"\terror={r.last_error[:200]}"
        typer.echo(line)
    typer.echo(", ".join(f"{n} {s}" for s, n in counts.items()))


@app.command()
def retry(
    ids: Annotated[list[int] | None, typer.Argument(help="Ids of dead rows (events list).")] = None,
    all_dead: Annotated[bool, typer.Option("--all", help="Every dead row.")] = False,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Put dead-lettered events back in the queue, due now, with their attempts reset."""
    if bool(ids) == all_dead:
        typer.echo("error: give the ids of dead events, or --all (not both)", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit(config, data_dir=data_dir)
    count = _run(settings, lambda store: store.retry(None if all_dead else ids, time.time()))
    if as_json:
        typer.echo(json.dumps({"requeued": count}))
    else:
        typer.echo(f"re-queued {count} dead event(s)")
    if ids and count < len(ids):
        typer.echo(f"note: {len(ids) - count} of the ids given are not dead rows", err=True)


@app.command()
def purge(
    state: Annotated[
        list[str] | None,
        typer.Option(help="States to delete (repeatable): delivered (default), dead, pending."),
    ] = None,
    older_than: Annotated[
        float, typer.Option(min=0, help="Only rows created more than this many seconds ago.")
    ] = 0.0,
    as_json: JsonOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete outbox rows: delivered ones by default (pending ones are never sent then)."""
    states = [s for s in (_state(x) for x in state or ["delivered"]) if s is not None]
    settings = settings_or_exit(config, data_dir=data_dir)
    before = time.time() - older_than
    count = _run(settings, lambda store: store.purge(states, before))
    if as_json:
        typer.echo(json.dumps({"purged": count, "states": states}))
    else:
        typer.echo(f"purged {count} event row(s) ({', '.join(states)})")
