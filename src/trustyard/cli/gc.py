"""`trustyard gc`: online garbage collection (safe while the server runs)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError

from trustyard.cache.base import LockBusy
from trustyard.cli.common import (
    ConfigOption,
    DataDirOption,
    LogLevelOption,
    open_store_or_exit,
    settings_or_exit,
    store_name,
)
from trustyard.config import Settings
from trustyard.logs import configure_logging
from trustyard.metadata.errors import MetadataError
from trustyard.registry.gc import GcReport
from trustyard.storage.errors import StorageError
from trustyard.wiring import open_services
from trustyard.wiring.gc import run_gc


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


async def _run(settings: Settings, dry_run: bool) -> tuple[GcReport, bool]:
    """The report, and whether the store holds any repository at all."""
    async with await open_services(settings) as services:
        registry = services.registry
        assert registry is not None
        try:
            has_repositories = bool(await registry.metadata.list_repositories(1, None))
            # With Redis, one GC at a time across every machine; the metadata's write lock
            # already keeps a pass atomic, this just avoids two passes queueing behind each other.
            async with registry.cache.lock("gc", ttl_seconds=6 * 3600):
                report = await run_gc(settings, services, dry_run=dry_run)
                return report, has_repositories
        except LockBusy:
            typer.echo(
                "error: another garbage collection is running; try again when it ends", err=True
            )
            raise typer.Exit(1) from None


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be freed; change nothing.")
    ] = False,
    grace_seconds: Annotated[
        float | None,
        typer.Option(help="Keep anything younger than this (protects in-flight pushes)."),
    ] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = None,
) -> None:
    """Remove unreferenced blobs, untagged manifests and abandoned uploads."""
    settings = settings_or_exit(
        config, data_dir=data_dir, log_level=log_level, gc_grace_seconds=grace_seconds
    )
    configure_logging(settings.log_level)
    open_store_or_exit(settings, "gc")
    try:
        report, has_repositories = asyncio.run(_run(settings, dry_run))
    except (OSError, SQLAlchemyError, MetadataError, StorageError) as exc:
        typer.echo(f"error: cannot open the store at {store_name(settings)}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not has_repositories:
        typer.echo(
            f"note: the store at {store_name(settings)} holds no repositories; if the server "
            "shows images, it uses another store (--data-dir, --config, TRUSTYARD_DATA_DIR)",
            err=True,
        )
    verb = "would delete" if dry_run else "deleted"
    for name, digest in report.plan.manifests:
        typer.echo(f"{verb} manifest {name}@{digest}")
    for name, digest in report.plan.links:
        typer.echo(f"{verb} blob link {name}@{digest}")
    for digest, size in report.plan.blobs:
        typer.echo(f"{verb} blob {digest} ({_human(size)})")
    for digest in report.orphan_files:
        typer.echo(f"{verb} orphan blob file {digest}")
    for upload_id in report.expired_uploads:
        typer.echo(f"{verb} expired upload {upload_id}")
    typer.echo(
        f"{'dry run: ' if dry_run else ''}{len(report.plan.manifests)} manifests, "
        f"{len(report.plan.blobs)} blobs, {len(report.expired_uploads)} uploads; "
        f"{'would free' if dry_run else 'freed'} {_human(report.freed_bytes)}"
    )
