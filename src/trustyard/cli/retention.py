"""`trustyard retention run [--dry-run] [--json]`: apply the `lifecycle.retention` rules now.

Deleted tags are recorded in the tag history (actor `retention`); their manifests and blobs go
with the next `trustyard gc` once the tag-history window has passed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from trustyard.cache.base import LockBusy
from trustyard.cli.common import ConfigOption, DataDirOption, open_store_or_exit, settings_or_exit
from trustyard.config import Settings
from trustyard.metadata.errors import MetadataError
from trustyard.registry.retention import RetentionReport, run_retention
from trustyard.storage.errors import StorageError
from trustyard.wiring import open_services
from trustyard.wiring.export import retention_trust
from trustyard.wiring.services import retention_rules

app = typer.Typer(help="Tag retention rules (lifecycle.retention).", no_args_is_help=True)


async def _run(settings: Settings, dry_run: bool) -> RetentionReport:
    async with await open_services(settings) as services:
        registry = services.registry
        assert registry is not None and registry.lifecycle is not None
        lifecycle = registry.lifecycle
        try:
            async with registry.cache.lock("retention", ttl_seconds=3600):
                return await run_retention(
                    lifecycle.history,
                    retention_rules(settings),
                    lifecycle.immutable,
                    dry_run=dry_run,
                    changed=registry.changed,
                    trust=retention_trust(services),
                )
        except LockBusy:
            typer.echo("error: another retention run is in progress; try again later", err=True)
            raise typer.Exit(1) from None


@app.command("run")
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be deleted; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete the tags the retention rules do not keep (manifests then go through GC)."""
    settings = settings_or_exit(config, data_dir=data_dir)
    if not settings.lifecycle.retention:
        typer.echo(
            "error: no retention rules: add [[lifecycle.retention]] tables to the config "
            "(docs/operations.md, Tag lifecycle)",
            err=True,
        )
        raise typer.Exit(2)
    open_store_or_exit(settings, "retention run")
    try:
        report = asyncio.run(_run(settings, dry_run))
    except (OSError, SQLAlchemyError, MetadataError, StorageError) as exc:
        typer.echo(f"error: cannot open the store: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    verb = "would delete" if dry_run else "delete"
    for d in report.decisions:
        action = verb if d.delete else "keep"
        typer.echo(f"{action} {d.repository}:{d.tag} ({d.digest}): {d.reason}")
    done = f"would delete {len(report.to_delete)}" if dry_run else f"deleted {report.deleted}"
    typer.echo(
        f"{'dry run: ' if dry_run else ''}{done} of {len(report.decisions)} governed tags "
        f"({report.ungoverned} tags no rule matches left alone)"
    )
