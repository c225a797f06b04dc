"""`trustyard scrub`: re-read every blob and manifest, check digests and references.

Exit 0 when everything verified, 1 when something was found (corrupt blobs are quarantined),
2 for a usage or configuration error. Safe beside a running server; `--rate` keeps its reads
from starving traffic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.progress import Progress, TaskID

from trustyard.cli.common import (
    ConfigOption,
    DataDirOption,
    open_store_or_exit,
    settings_or_exit,
    store_name,
)
from trustyard.cli.progress import byte_progress
from trustyard.config import Settings
from trustyard.logs import configure_logging
from trustyard.oci.digest import Digest
from trustyard.oci.platforms import IndexPlatforms
from trustyard.registry.scrub import MB, ScrubOptions, ScrubReport
from trustyard.registry.scrub import scrub as run_scrub
from trustyard.wiring import open_services


class _Bar:
    """A rich progress bar on stderr (bytes hashed so far against the planned total)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def planned(self, blobs: int, total_bytes: int) -> None:
        self.task = self.progress.add_task(f"scrubbing {blobs} blobs", total=total_bytes)

    def advanced(self, nbytes: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, nbytes)

    def blob_done(self, digest: Digest) -> None:
        """Nothing per blob: the byte count already moves the bar."""


@contextmanager
def _progress() -> Iterator[_Bar | None]:
    """A bar when stderr is a terminal; nothing otherwise (logs, CI)."""
    with byte_progress() as progress:
        yield None if progress is None else _Bar(progress)


async def _run(settings: Settings, options: ScrubOptions, bar: _Bar | None) -> ScrubReport:
    # Logs at warning level on stderr, so `--json` output on stdout stays clean.
    configure_logging("warning")
    async with await open_services(settings) as services:
        registry = services.registry
        assert registry is not None
        return await run_scrub(registry.storage, registry.metadata, options, bar)


def _print(report: ScrubReport) -> None:
    for blob in report.corrupt_blobs:
        what = "quarantined" if blob.quarantined else "gone before it could be quarantined"
        typer.echo(f"corrupt blob {blob.digest} ({blob.size} bytes hash to {blob.actual}): {what}")
    for manifest in report.corrupt_manifests:
        typer.echo(f"corrupt manifest {manifest.repository}@{manifest.digest}: {manifest.reason}")
    for ref in report.missing:
        typer.echo(f"missing {ref.kind} {ref.digest} referenced by {ref.repository}@{ref.manifest}")
    typer.echo(
        f"{'ok' if report.ok else 'PROBLEMS FOUND'}: {report.repositories} repositories, "
        f"{report.manifests_checked} manifests, {report.blobs_checked} blobs "
        f"({report.bytes_checked} bytes) in {report.duration_seconds:.1f} s; "
        f"{len(report.corrupt_blobs)} corrupt blobs, {len(report.corrupt_manifests)} corrupt "
        f"manifests, {len(report.missing)} missing references"
    )


def scrub(
    repository: Annotated[
        str | None,
        typer.Option("--repository", help="Only repositories matching this glob (e.g. 'team/*')."),
    ] = None,
    rate: Annotated[
        float, typer.Option("--rate", help="Read at most this many MB/s (10^6 bytes); 0: no limit.")
    ] = 0.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout.")
    ] = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Verify stored blobs and manifests; quarantine corrupt blobs (exit 1 when any found)."""
    if rate < 0:
        typer.echo("error: --rate must be 0 (no limit) or a positive number of MB/s", err=True)
        raise typer.Exit(2)
    settings = settings_or_exit(config, data_dir=data_dir)
    try:
        open_store_or_exit(settings, "scrub")
    except typer.Exit:
        raise typer.Exit(2) from None
    options = ScrubOptions(
        repository=repository,
        rate=rate * MB,
        index_platforms=IndexPlatforms.parse(settings.index_platforms),
        mirrored=tuple(m.prefix for m in settings.mirrors),
    )
    try:
        with _progress() as bar:
            report = asyncio.run(_run(settings, options, bar))
    except Exception as exc:  # one line, never a traceback (the store, S3, a schema mismatch)
        typer.echo(f"error: scrub of {store_name(settings)} failed: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print(report)
    if not report.ok:
        raise typer.Exit(1)
