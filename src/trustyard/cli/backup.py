"""`trustyard backup DEST` and `trustyard restore SRC`: the embedded store, while it serves.

PostgreSQL + S3 deployments are backed up with those systems' own tools (docs/backup.md).
Exit codes: 0 done, 1 blobs missing or corrupt (the backup or restore is not completed),
2 usage or configuration errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer

from trustyard.cli.common import (
    ConfigOption,
    DataDirOption,
    open_store_or_exit,
    settings_or_exit,
    store_name,
)
from trustyard.cli.progress import byte_progress
from trustyard.config import Settings, create_data_dir
from trustyard.logs import configure_logging
from trustyard.metadata.sqlite_backup import (
    SnapshotContents,
    SnapshotError,
    copy_database,
    read_contents,
)
from trustyard.oci.digest import Digest
from trustyard.registry import backup as bk
from trustyard.storage.base import Storage
from trustyard.wiring.backends import open_storage

OnBytes = Callable[[int], None]
_SNAPSHOT = ".metadata.db.snapshot"


async def open_source_storage(settings: Settings) -> Storage:
    """The running registry's blob storage."""
    configure_logging("warning")
    return open_storage(settings)


def open_target_storage(settings: Settings) -> Storage:
    """Files under the restored data dir (page-cached writes: restore reads each blob back)."""
    return open_storage(settings.model_copy(update={"direct_io": False}))


@contextmanager
def _bar(description: str, total: int) -> Iterator[OnBytes | None]:
    """Bytes copied against `total` on stderr when it is a terminal; nothing otherwise."""
    with byte_progress() as progress:
        if progress is None:
            yield None
            return
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _blobs(contents: SnapshotContents) -> list[tuple[Digest, int]]:
    return [(Digest.parse(d), size) for d, size in contents.blobs]


def _problems(report: bk.BlobCopyReport, verb: str) -> None:
    for digest in report.missing:
        typer.echo(f"missing blob {digest}: not {verb}", err=True)
    for digest in report.corrupt:
        typer.echo(
            f"corrupt blob {digest}: its bytes do not match the digest; not {verb}", err=True
        )


async def _backup(settings: Settings, dest: Path) -> tuple[SnapshotContents, bk.BlobCopyReport]:
    snapshot = dest / _SNAPSHOT
    await anyio.to_thread.run_sync(copy_database, settings.database_path, snapshot)
    contents = await anyio.to_thread.run_sync(read_contents, snapshot)
    storage = await open_source_storage(settings)
    try:
        with _bar("backing up blobs", sum(s for _, s in contents.blobs)) as on_bytes:
            report = await bk.backup_blobs(storage, _blobs(contents), dest, on_bytes)
    finally:
        await storage.close()
    return contents, report


def _finish_backup(settings: Settings, dest: Path, contents: SnapshotContents) -> list[str]:
    """Keys, then the snapshot into place, then backup.json (its presence means complete)."""
    files = bk.copy_private_files(settings.data_dir, dest / bk.FILES)
    (dest / _SNAPSHOT).replace(dest / bk.METADATA)
    info: dict[str, Any] = {
        "schema_revision": contents.revision,
        "counts": contents.counts,
        "blobs": len(contents.blobs),
        "bytes": sum(s for _, s in contents.blobs),
        "files": files,
    }
    bk.write_manifest(dest, info)
    return files


def backup(
    dest: Annotated[
        Path, typer.Argument(help="Backup directory (repeat runs copy only new blobs).")
    ],
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Back up the embedded store while the server runs: metadata snapshot, blobs, keys."""
    settings = settings_or_exit(config, data_dir=data_dir)
    if settings.database_url:
        raise _fail(
            "trustyard backup copies the embedded store (SQLite in the data dir); this registry "
            "uses PostgreSQL (database_url). Back it up with pg_dump and your object store's own "
            "tools, in the order docs/backup.md gives."
        )
    try:
        open_store_or_exit(settings, "backup")
    except typer.Exit:
        raise typer.Exit(2) from None
    if not bk.is_reusable_target(dest):
        raise _fail(f"{dest} holds other files; give an empty directory or an earlier backup")
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        contents, report = asyncio.run(_backup(settings, dest))
    except Exception as exc:  # disk, the object store, a schema mismatch: one line, no traceback
        raise _fail(f"backup failed: {exc}") from None
    if not report.ok:
        _problems(report, "backed up")
        raise _fail(
            f"backup incomplete: {len(report.missing)} missing and {len(report.corrupt)} "
            "corrupt blobs (run `trustyard scrub`, then push the images again)",
            1,
        )
    try:
        files = _finish_backup(settings, dest, contents)
    except OSError as exc:
        raise _fail(f"backup failed: {exc}") from None
    typer.echo(
        f"backed up {store_name(settings)} to {dest}: {contents.counts.get('manifests', 0)} "
        f"manifests, {len(contents.blobs)} blobs ({report.copied} copied, {report.present} "
        f"already there, {report.bytes_copied} bytes), {len(files)} key files"
    )


async def _restore(
    settings: Settings, source: Path, contents: SnapshotContents
) -> bk.BlobCopyReport:
    storage = open_target_storage(settings)
    try:
        with _bar("restoring blobs", sum(s for _, s in contents.blobs)) as on_bytes:
            return await bk.restore_blobs(source, _blobs(contents), storage, on_bytes)
    finally:
        await storage.close()


def restore(
    source: Annotated[Path, typer.Argument(help="A directory written by `trustyard backup`.")],
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="The data dir to restore into (empty or new).")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Restore into a non-empty data dir (server stopped).")
    ] = False,
) -> None:
    """Restore a backup into a data dir, verifying every blob's digest."""
    try:
        info = bk.read_manifest(source)
        contents = read_contents(source / bk.METADATA)
    except (ValueError, SnapshotError) as exc:
        raise _fail(str(exc)) from None
    if data_dir.exists() and not force and any(data_dir.iterdir()):
        raise _fail(
            f"{data_dir} is not empty; restore only writes into an empty or new data dir "
            "(--force restores over it: stop its server first)"
        )
    settings = settings_or_exit(None, data_dir=data_dir)
    try:
        create_data_dir(data_dir)
        report = asyncio.run(_restore(settings, source, contents))
    except Exception as exc:  # a full disk, a permission: one line, no traceback
        raise _fail(f"restore failed: {exc}") from None
    if not report.ok:
        _problems(report, "restored")
        raise _fail(
            f"restore incomplete: {len(report.missing)} missing and {len(report.corrupt)} corrupt "
            f"blobs in {source}; the backup's metadata was not restored into {data_dir}",
            1,
        )
    try:
        files = bk.copy_private_files(source / bk.FILES, data_dir)
        copy_database(source / bk.METADATA, settings.database_path)  # last: now it is a store
    except (OSError, SnapshotError) as exc:
        raise _fail(f"restore failed: {exc}") from None
    typer.echo(
        f"restored the backup of {info.get('created', '?')} into {data_dir}: "
        f"{contents.counts.get('manifests', 0)} manifests, {report.copied} blobs verified "
        f"({report.bytes_copied} bytes), {len(files)} key files"
    )
