"""Copy every table from one metadata store to another (embedded SQLite → PostgreSQL).

Idempotent: rows already in the target are skipped, so an interrupted copy is simply run again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from sqlalchemy import Integer, Table, func, select, text
from sqlalchemy.dialects import postgresql, sqlite

from trustyard.metadata import schema as t
from trustyard.metadata.migrate import target_metadata
from trustyard.metadata.sql import SqlMetadataStore

_BATCH = 500


async def copy_tables(
    source: SqlMetadataStore,
    target: SqlMetadataStore,
    on_rows: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Copy all rows table by table (parents first); returns the source row count per table."""
    counts: dict[str, int] = {}
    insert = postgresql.insert if target.writer.dialect.name == "postgresql" else sqlite.insert
    for table in target_metadata().sorted_tables:
        async with source.reader.connect() as src:
            total = int((await src.execute(select(func.count()).select_from(table))).scalar_one())
            counts[table.name] = total
            result = await src.stream(select(table))
            async for batch in result.partitions(_BATCH):
                rows = [dict(row._mapping) for row in batch]
                async with target.writer.begin() as dst:
                    await dst.execute(insert(table).on_conflict_do_nothing(), rows)
                if on_rows is not None:
                    on_rows(table.name, len(rows))
        if target.writer.dialect.name == "postgresql":
            await _advance_sequences(target, table)
    return counts


async def _advance_sequences(target: SqlMetadataStore, table: Table) -> None:
    """Explicit ids were copied: move PostgreSQL's serial counter past them."""
    keys = list(table.primary_key.columns)
    if len(keys) != 1 or not isinstance(keys[0].type, Integer) or keys[0].autoincrement is False:
        return
    column = keys[0].name
    # Identifiers come from our own table definitions, never from input.
    sql = f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column}'), COALESCE((SELECT MAX({column}) FROM {table.name}), 0) + 1, false)"  # noqa: S608
    async with target.writer.begin() as conn:
        await conn.execute(text(sql))


async def row_counts(store: SqlMetadataStore) -> dict[str, int]:
    counts = {}
    async with store.reader.connect() as conn:
        for table in target_metadata().sorted_tables:
            counts[table.name] = int(
                (await conn.execute(select(func.count()).select_from(table))).scalar_one()
            )
    return counts


async def manifest_rows(store: SqlMetadataStore) -> AsyncIterator[tuple[str, bytes, str]]:
    """(digest, exact bytes, media type) of every stored manifest, streamed."""
    async with store.reader.connect() as conn:
        result = await conn.stream(
            select(t.manifests.c.digest, t.manifests.c.content, t.manifests.c.media_type)
        )
        async for row in result:
            yield row.digest, bytes(row.content), row.media_type


class SqlTables:
    """`registry.migration.Tables` over a SQL metadata store (built by the composition root)."""

    def __init__(self, store: SqlMetadataStore) -> None:
        self.store = store

    async def blob_digests(self) -> set[str]:
        return await self.store.blob_digests()

    async def copy_to(self, target: SqlTables) -> dict[str, int]:
        return await copy_tables(self.store, target.store)

    async def row_counts(self) -> dict[str, int]:
        return await row_counts(self.store)

    def manifest_rows(self) -> AsyncIterator[tuple[str, bytes, str]]:
        return manifest_rows(self.store)
