"""`trustyard quota show [--json]`: bytes used per namespace against its `lifecycle.quotas` limit."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from trustyard.cli.common import ConfigOption, DataDirOption, open_store_or_exit, settings_or_exit
from trustyard.config import Settings
from trustyard.metadata.errors import MetadataError
from trustyard.registry.quota import Usage
from trustyard.wiring import open_services
from trustyard.wiring.services import quotas_for_show

app = typer.Typer(help="Namespace byte quotas (lifecycle.quotas).", no_args_is_help=True)


async def _show(settings: Settings) -> list[Usage]:
    async with await open_services(settings, repositories=False) as services:
        return await quotas_for_show(settings, services.database).show()


@app.command("show")
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Usage of every namespace (distinct blobs once, plus manifests) and its limit."""
    settings = settings_or_exit(config, data_dir=data_dir)
    open_store_or_exit(settings, "quota show")
    try:
        usage = asyncio.run(_show(settings))
    except (OSError, SQLAlchemyError, MetadataError) as exc:
        typer.echo(f"error: cannot open the store: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(
            json.dumps(
                [
                    {"namespace": u.namespace, "used": u.used, "limit": u.limit or None}
                    for u in usage
                ],
                indent=2,
            )
        )
        return
    for u in usage:
        limit = f"{u.limit} bytes ({100 * u.used / u.limit:.1f}%)" if u.limit else "no limit"
        typer.echo(f"{u.namespace}: {u.used} bytes used of {limit}")
