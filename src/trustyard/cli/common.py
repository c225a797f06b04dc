"""Options and helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trustyard.config import ConfigError, Settings, load_settings

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
