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
from trustyard.logs import configure_logging
from trustyard.oci.digest import Digest
from trustyard.registry.migration import MigrationReport, migrate_registry
from trustyard.storage.base import Storage
from trustyard.wiring import SchemaMismatch, open_services, upgrade_database


async def _run(
    source: Settings, target: Settings, progress: Progress, overwrite_tags: bool
) -> MigrationReport:
    await upgrade_database(target.metadata_target)
    async with await open_services(source) as src, await open_services(target) as dst:
        assert src.storage is not None and dst.storage is not None
        digests = await src.tables.blob_digests()
        total = sum([await _size(src.storage, d) for d in digests])
        task = progress.add_task("blobs", total=total)
        return await migrate_registry(
            src.storage,
            src.tables,
            dst.storage,
            dst.tables,
            overwrite_tags=overwrite_tags,
            on_bytes=lambda n: progress.advance(task, n),
        )


async def _size(storage: Storage, digest_text: str) -> int:
    st = await storage.stat(Digest.parse(digest_text))
    return st.size if st is not None else 0


def migrate_storage(
    source: Annotated[Path, typer.Option("--from", help="Config (TOML) of the registry to read.")],
    target: Annotated[Path, typer.Option("--to", help="Config (TOML) of the registry to fill.")],
    overwrite_tags: Annotated[
        bool,
        typer.Option(
            "--overwrite-tags",
            help="A tag on both sides with different digests takes the source's (default: refuse).",
        ),
    ] = False,
) -> None:
    """Copy every blob (digest-verified) and merge all metadata into the target; safe to re-run.

    Exit 0 only when everything was copied and verified; 1 on conflicts (nothing written) or
    problems; 2 when a database schema is not current.
    """
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
            report = asyncio.run(_run(src, dst, progress, overwrite_tags))
    except SchemaMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if report.conflicts:
        for conflict in report.conflicts:
            typer.echo(f"conflict: {conflict}", err=True)
        typer.echo(
            f"refused: {len(report.conflicts)} conflicts, nothing written "
            "(--overwrite-tags takes the source's tags; trust data must be reconciled by hand)",
            err=True,
        )
        raise typer.Exit(1)
    _print_report(report)
    if report.problems:
        raise typer.Exit(1)
    typer.echo("verified: every source tag resolves to the same digest on the target")


def _print_report(report: MigrationReport) -> None:
    """Per kind of row: copied, already there, overwritten; then notes and problems."""
    typer.echo(
        f"copied {report.blobs_copied} blobs ({report.bytes_copied} bytes), "
        f"{report.blobs_skipped} already there"
    )
    for kind, tally in report.rows.items():
        overwritten = f", {tally.overwritten} overwritten" if tally.overwritten else ""
        typer.echo(f"{kind}: {tally.copied} copied, {tally.present} already there{overwritten}")
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    for problem in report.problems:
        typer.echo(f"problem: {problem}", err=True)
