"""Options and helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trustyard.config import ConfigError, Settings, default_data_dir, load_settings

DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Where blobs and metadata live.", envvar=None)
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="TOML config file.")]
LogLevelOption = Annotated[
    str | None, typer.Option("--log-level", help="debug, info, warning or error.")
]


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """Load settings, turning a configuration problem into one clear line and exit code 2."""
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def store_name(settings: Settings) -> str:
    """Where the metadata lives, for people: the data dir, or the database URL without password."""
    if settings.database_url:
        from sqlalchemy.engine import make_url

        try:
            return make_url(settings.database_url).render_as_string(hide_password=True)
        except Exception:  # an unparsable URL fails later with its own message
            return "the configured database_url"
    return str(settings.data_dir.absolute())


def open_store_or_exit(settings: Settings, command: str, *, create: bool = False) -> None:
    """Say which store `command` opens; never invent an embedded store silently.

    `trustyard serve` (and `make serve`) use the same default data dir, so without flags the
    CLI finds the server's store. A data dir without a store is refused (a typo or another
    user's home would otherwise look like an empty registry), unless `create` is asked for.
    """
    typer.echo(f"store: {store_name(settings)}", err=True)
    if settings.database_url or settings.database_path.exists():
        return
    if create:
        typer.echo(
            f"store: {settings.data_dir.absolute()} had no trustyard store; created a new, empty one "
            "(the server must run with the same --data-dir, --config or TRUSTYARD_DATA_DIR)",
            err=True,
        )
        return
    where = settings.data_dir.absolute()
    if where == default_data_dir().absolute():
        hint = (
            "This is the default data dir, which `trustyard serve` and `make serve` use when "
            "started without --data-dir, --config or TRUSTYARD_DATA_DIR; start the server once "
            "(it creates the store) or give this command the server's settings."
        )
    else:
        hint = (
            f"`trustyard serve` and `make serve` keep theirs in {default_data_dir()} unless "
            "started with --data-dir, --config or TRUSTYARD_DATA_DIR: give this command the same."
        )
    typer.echo(
        f"error: no trustyard store at {where} (no {settings.database_path.name}), so "
        f"{command} has nothing to work on. {hint}",
        err=True,
    )
    raise typer.Exit(1)
