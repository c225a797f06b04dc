"""`trustyard migrate-storage`: move a registry to other backends, with a progress bar."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trustyard.cli.common import settings_or_exit
from trustyard.config import Settings
from trustyard.http.app import configure_logging, open_registry
from trustyard.metadata import SchemaMismatch, SqlMetadataStore, upgrade_database
from trustyard.oci.digest import Digest
from trustyard.registry import Registry
from trustyard.registry.migration import MigrationReport, migrate_registry


async def _run(source: Settings, target: Settings, progress: Progress) -> MigrationReport:
    await upgrade_database(target.metadata_target)
    src, dst = await open_registry(source), await open_registry(target)
    try:
        assert isinstance(src.metadata, SqlMetadataStore) and isinstance(
            dst.metadata, SqlMetadataStore
        )
        total = sum(
            size for size in [await _size(src, d) for d in await src.metadata.blob_digests()]
        )
        task = progress.add_task("blobs", total=total)
        return await migrate_registry(
            src.storage,
            src.metadata,
            dst.storage,
            dst.metadata,
            on_bytes=lambda n: progress.advance(task, n),
        )
    finally:
        for registry in (src, dst):
            await registry.metadata.close()
            await registry.storage.close()
            await registry.cache.close()


async def _size(registry: Registry, digest_text: str) -> int:
    st = await registry.storage.stat(Digest.parse(digest_text))
    return st.size if st is not None else 0


def migrate_storage(
    source: Annotated[Path, typer.Option("--from", help="Config (TOML) of the registry to read.")],
    target: Annotated[Path, typer.Option("--to", help="Config (TOML) of the registry to fill.")],
) -> None:
    """Copy every blob (digest-verified) and all metadata to other backends; safe to re-run."""
    src, dst = settings_or_exit(source), settings_or_exit(target)
    configure_logging("warning")
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with progress:
            report = asyncio.run(_run(src, dst, progress))
    except SchemaMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"copied {report.blobs_copied} blobs ({report.bytes_copied} bytes), "
        f"{report.blobs_skipped} already there; "
        + ", ".join(f"{table} {n}" for table, n in report.rows.items() if n)
    )
    for problem in report.problems:
        typer.echo(f"problem: {problem}", err=True)
    if report.problems:
        raise typer.Exit(1)
