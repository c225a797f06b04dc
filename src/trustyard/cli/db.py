"""`trustyard db`: schema migrations for the metadata store."""

from __future__ import annotations

import asyncio

import typer

from trustyard.cli.common import ConfigOption, DataDirOption, settings_or_exit
from trustyard.wiring import SchemaMismatch, upgrade_database

app = typer.Typer(help="Metadata database schema (Alembic migrations).", no_args_is_help=True)


@app.command("upgrade")
def upgrade(data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Run pending migrations (once per deployment, before starting new replicas)."""
    settings = settings_or_exit(config, data_dir=data_dir)
    try:
        before, after = asyncio.run(upgrade_database(settings.metadata_target))
    except SchemaMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: cannot reach the metadata database: {exc}", err=True)
        raise typer.Exit(2) from None
    if before == after:
        typer.echo(f"schema already at {after}")
    else:
        typer.echo(f"schema upgraded from {before or 'empty'} to {after}")
