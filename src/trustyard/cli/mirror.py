"""`trustyard mirror prefetch REF...` and `trustyard mirror status`: the pull-through cache."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Annotated

import typer
from rich.progress import Progress

from trustyard.cli.common import (
    ConfigOption,
    DataDirOption,
    LogLevelOption,
    open_store_or_exit,
    settings_or_exit,
)
from trustyard.cli.progress import byte_progress
from trustyard.config import ConfigError, Settings
from trustyard.logs import configure_logging
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.errors import RegistryError
from trustyard.registry.mirror import Mirrors
from trustyard.registry.mirror_status import MirrorStatus, mirror_status
from trustyard.wiring import open_services

app = typer.Typer(help="The pull-through mirror's cache (docs/mirror.md).", no_args_is_help=True)


def _split(ref: str) -> tuple[str, str]:
    """`name:tag`, `name@digest` or `name` (latest), with local repository names."""
    if "@" in ref:
        name, _, digest = ref.partition("@")
        return name, digest
    name, sep, tag = ref.rpartition(":")
    if sep and "/" not in tag:
        return name, tag
    return ref, "latest"


def _mirrors(services_mirrors: Mirrors | None) -> Mirrors:
    if services_mirrors is None:
        typer.echo("error: no [[mirrors]] are configured (docs/mirror.md)", err=True)
        raise typer.Exit(2)
    return services_mirrors


async def _prefetch(settings: Settings, refs: list[str]) -> int:
    failed = 0
    async with await open_services(settings) as services:
        mirrors = _mirrors(services.mirrors)
        with byte_progress() as bar:
            for ref in refs:
                name, reference = _split(ref)
                if mirrors.match(name) is None:
                    typer.echo(f"error: {name} is under no configured mirror prefix", err=True)
                    failed += 1
                    continue
                task = bar.add_task(ref, total=None) if bar is not None else None

                def advance(
                    record: ManifestRecord,
                    size: int,
                    bar: Progress | None = bar,
                    task: object = task,
                ) -> None:
                    if bar is not None and task is not None:
                        bar.update(task, advance=size)  # type: ignore[arg-type]

                try:
                    done = await mirrors.prefetch(name, reference, advance)
                except RegistryError as exc:
                    typer.echo(f"error: {ref}: {exc.message}", err=True)
                    failed += 1
                    continue
                typer.echo(f"{ref}: cached {len(done)} manifest(s), {done[0].digest}")
    return failed


def prefetch(
    refs: Annotated[list[str], typer.Argument(help="name:tag or name@digest, local names.")],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Warm the cache: fetch manifests (every platform of an index) and their blobs."""
    settings = settings_or_exit(config, data_dir=data_dir, log_level=log_level)
    configure_logging(settings.log_level)
    open_store_or_exit(settings, "mirror prefetch", create=True)
    try:
        failed = asyncio.run(_prefetch(settings, refs))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if failed:
        raise typer.Exit(1)


async def _status(settings: Settings) -> list[MirrorStatus]:
    async with await open_services(settings) as services:
        mirrors = _mirrors(services.mirrors)
        return await mirror_status(mirrors, services.database.lifecycle)


def status(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Upstream health (GET /v2/ and its latency) and cache size of every mirror."""
    settings = settings_or_exit(config, data_dir=data_dir, log_level=log_level)
    configure_logging(settings.log_level)
    open_store_or_exit(settings, "mirror status")
    try:
        report = asyncio.run(_status(settings))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"mirrors": [dataclasses.asdict(m) for m in report]}, indent=2))
        return
    for m in report:
        typer.echo(
            f"{m.prefix}: {m.repositories} repositories, {m.manifests} manifests, {m.bytes} bytes"
        )
        for u in m.upstreams:
            latency = f"{u.latency_ms} ms" if u.latency_ms is not None else "-"
            typer.echo(f"  {'up  ' if u.up else 'DOWN'} {u.url} {latency} ({u.detail})")


app.command("prefetch")(prefetch)
app.command("status")(status)
