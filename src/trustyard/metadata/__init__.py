"""Metadata backends behind the `MetadataStore` Protocol; `open_metadata` picks one from a URL."""

from __future__ import annotations

from pathlib import Path

from trustyard.metadata import migrate
from trustyard.metadata.base import GcPlan, ManifestRecord, MetadataStore, UploadRecord
from trustyard.metadata.migrate import SchemaMismatch
from trustyard.metadata.postgres import postgres_engines
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.metadata.sqlite import sqlite_engines

__all__ = [
    "GcPlan",
    "ManifestRecord",
    "MetadataStore",
    "SchemaMismatch",
    "SqlMetadataStore",
    "UploadRecord",
    "open_metadata",
    "upgrade_database",
]


def is_postgres_url(target: Path | str) -> bool:
    return isinstance(target, str) and target.split(":", 1)[0].split("+", 1)[0] in (
        "postgresql",
        "postgres",
    )


async def open_metadata(target: Path | str, *, create: bool = False) -> SqlMetadataStore:
    """Open the store: a SQLite file path (embedded default) or a PostgreSQL URL.

    The schema must be at the migrations' head. With `create`, the embedded SQLite store is
    created or upgraded in place; PostgreSQL is only ever upgraded by `trustyard db upgrade`.
    Raises SchemaMismatch (with what to do) otherwise.
    """
    if is_postgres_url(target):
        reader, writer = postgres_engines(str(target))
        auto = False
    else:
        path = Path(target)
        if create:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir: owner only
        reader, writer = sqlite_engines(path)
        auto = create
    store = SqlMetadataStore(reader, writer)
    try:
        if auto:
            await migrate.upgrade(writer)
        else:
            await migrate.check(reader)
    except BaseException:
        await store.close()
        raise
    return store


async def upgrade_database(target: Path | str) -> tuple[str | None, str | None]:
    """`trustyard db upgrade`: run pending migrations; returns (before, after) revisions."""
    if is_postgres_url(target):
        reader, writer = postgres_engines(str(target))
    else:
        Path(target).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        reader, writer = sqlite_engines(Path(target))
    try:
        return await migrate.upgrade(writer)
    finally:
        await reader.dispose()
        await writer.dispose()
