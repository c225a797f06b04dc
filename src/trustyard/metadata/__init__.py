"""Metadata backends behind the `MetadataStore` Protocol; `open_metadata` picks one from a URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import insert, select

from trustyard.metadata import schema
from trustyard.metadata.base import GcPlan, ManifestRecord, MetadataStore, UploadRecord
from trustyard.metadata.postgres import postgres_engines
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.metadata.sqlite import sqlite_engines

__all__ = [
    "GcPlan",
    "ManifestRecord",
    "MetadataStore",
    "SqlMetadataStore",
    "UploadRecord",
    "open_metadata",
]


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer trustyard; refuse rather than corrupt it."""


def is_postgres_url(target: Path | str) -> bool:
    return isinstance(target, str) and target.split(":", 1)[0].split("+", 1)[0] in (
        "postgresql",
        "postgres",
    )


async def open_metadata(target: Path | str, *, create: bool = False) -> SqlMetadataStore:
    """Open the store: a SQLite file path (embedded default) or a PostgreSQL URL.

    `create` makes the schema when missing (and refuses a schema newer than this code).
    """
    if is_postgres_url(target):
        reader, writer = postgres_engines(str(target))
    else:
        path = Path(target)
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        reader, writer = sqlite_engines(path)
    store = SqlMetadataStore(reader, writer)
    if create:
        async with writer.begin() as conn:
            await conn.run_sync(schema.metadata.create_all)
            version = (
                await conn.execute(select(schema.schema_info.c.version))
            ).scalar_one_or_none()
            if version is None:
                await conn.execute(
                    insert(schema.schema_info).values(id=1, version=schema.SCHEMA_VERSION)
                )
            elif version > schema.SCHEMA_VERSION:
                await store.close()
                raise SchemaTooNew(
                    f"metadata schema version {version} is newer than this trustyard supports "
                    f"({schema.SCHEMA_VERSION}); upgrade trustyard"
                )
    return store
