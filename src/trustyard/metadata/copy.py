"""Merge one registry's metadata into another by natural keys (embedded SQLite → PostgreSQL).

Numeric ids never cross: a repository is matched by name (the target's id is used, or a new
one is made), manifests by (repository, digest), tags by (repository, name), blobs by digest,
simple signatures by (repository, digest, content), authority statements by id. One transaction per repository, so a
repository is either fully merged or not at all. Trust and auth rows: `metadata.copy_trust`.
Upload sessions are not copied: their bytes live in the source storage's upload area.
Idempotent: a second run finds everything already there.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trustyard.metadata import schema as t
from trustyard.metadata.audit_sql import copy_audit
from trustyard.metadata.authority_sql import authority_statements
from trustyard.metadata.copy_base import CopyResult, Tally
from trustyard.metadata.copy_trust import (
    copy_auth,
    copy_trust,
    trust_conflicts,
    verify_trust,
)
from trustyard.metadata.signatures_sql import simple_signatures
from trustyard.metadata.sql import SqlMetadataStore

_BATCH = 500


class TagConflict(Exception):
    """A tag changed on the target between the conflict check and the copy."""


def insert_for(engine: AsyncEngine) -> Callable[[Table], Any]:
    """The dialect's INSERT (both have ON CONFLICT)."""
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


async def _count(conn: AsyncConnection, table: Table, *where: Any) -> int:
    return int(
        (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar_one()
    )


async def _repositories(conn: AsyncConnection) -> list[tuple[int, str, float]]:
    r = t.repositories
    rows = await conn.execute(select(r.c.id, r.c.name, r.c.created_at).order_by(r.c.name))
    return [(row.id, row.name, row.created_at) for row in rows]


async def _repo_id(conn: AsyncConnection, name: str) -> int | None:
    r = t.repositories
    return (await conn.execute(select(r.c.id).where(r.c.name == name))).scalar_one_or_none()


async def _tags(conn: AsyncConnection, repo_id: int) -> dict[str, str]:
    rows = await conn.execute(
        select(t.tags.c.name, t.tags.c.digest).where(t.tags.c.repo_id == repo_id)
    )
    return {row.name: row.digest for row in rows}


async def _signatures(conn: AsyncConnection, repo_id: int) -> dict[tuple[str, str], str]:
    """(digest, name) -> sha256 of the content."""
    s = simple_signatures
    rows = await conn.execute(
        select(s.c.digest, s.c.name, s.c.content).where(s.c.repo_id == repo_id)
    )
    return {(row.digest, row.name): hashlib.sha256(bytes(row.content)).hexdigest() for row in rows}


async def registry_conflicts(
    source: SqlMetadataStore, target: SqlMetadataStore, overwrite_tags: bool
) -> list[str]:
    """Tags whose digest differs on the two sides (unless overwritten), signature name clashes."""
    out: list[str] = []
    async with source.reader.connect() as src, target.reader.connect() as dst:
        for src_id, name, _ in await _repositories(src):
            dst_id = await _repo_id(dst, name)
            if dst_id is None:
                continue
            if not overwrite_tags:
                theirs = await _tags(dst, dst_id)
                for tag, digest in sorted((await _tags(src, src_id)).items()):
                    if tag in theirs and theirs[tag] != digest:
                        out.append(
                            f"tag {name}:{tag} is {digest} in the source, {theirs[tag]} in the target"
                        )
            theirs_sigs = await _signatures(dst, dst_id)
            for key, content in sorted((await _signatures(src, src_id)).items()):
                if key in theirs_sigs and theirs_sigs[key] != content:
                    out.append(
                        f"simple signature {name}@{key[0]} {key[1]}: different content in the target"
                    )
    return out


async def _copy_rows(
    src: AsyncConnection,
    dst: AsyncConnection,
    insert: Callable[[Table], Any],
    table: Table,
    ids: tuple[int, int],
    tally: Tally,
    keep: Callable[[dict[str, Any]], bool] = lambda row: True,
) -> None:
    """Every row of one repository, re-keyed to the target's repository id; duplicates skipped."""
    src_id, dst_id = ids
    before = await _count(dst, table, table.c.repo_id == dst_id)
    total = 0
    result = await src.stream(select(table).where(table.c.repo_id == src_id))
    async for batch in result.partitions(_BATCH):
        rows = [dict(row._mapping) | {"repo_id": dst_id} for row in batch]
        total += len(rows)
        rows = [row for row in rows if keep(row)]
        if rows:
            await dst.execute(insert(table).on_conflict_do_nothing(), rows)
    copied = await _count(dst, table, table.c.repo_id == dst_id) - before
    tally.copied += copied
    tally.present += total - copied


async def _copy_tags(
    src: AsyncConnection,
    dst: AsyncConnection,
    insert: Callable[[Table], Any],
    ids: tuple[int, int],
    overwrite: bool,
    tally: Tally,
) -> None:
    src_id, dst_id = ids
    theirs = await _tags(dst, dst_id)
    rows = (await src.execute(select(t.tags).where(t.tags.c.repo_id == src_id))).all()
    for row in rows:
        current = theirs.get(row.name)
        if current == row.digest:
            tally.present += 1
            continue
        values = dict(row._mapping) | {"repo_id": dst_id}
        if current is None:
            await dst.execute(insert(t.tags).values(values))
            tally.copied += 1
        elif overwrite:
            await dst.execute(
                t.tags.update()
                .where(t.tags.c.repo_id == dst_id, t.tags.c.name == row.name)
                .values(digest=row.digest, updated_at=row.updated_at)
            )
            tally.overwritten += 1
        else:
            raise TagConflict(f"tag {row.name} changed on the target during the migration")


async def _copy_repository(
    source: SqlMetadataStore,
    target: SqlMetadataStore,
    repository: tuple[int, str, float],
    overwrite_tags: bool,
    result: CopyResult,
) -> None:
    """One repository in one target transaction: all of its rows land, or none."""
    src_id, name, created_at = repository
    insert = insert_for(target.writer)
    async with source.reader.connect() as src, target.writer.begin() as dst:
        dst_id = await _repo_id(dst, name)
        if dst_id is None:
            await dst.execute(insert(t.repositories).values(name=name, created_at=created_at))
            dst_id = await _repo_id(dst, name)
            assert dst_id is not None
            result.tally("repositories").copied += 1
        else:
            result.tally("repositories").present += 1
        ids = (src_id, dst_id)
        for table in (t.manifests, t.manifest_refs, t.repo_blobs):
            await _copy_rows(src, dst, insert, table, ids, result.tally(table.name))
        await _copy_tags(src, dst, insert, ids, overwrite_tags, result.tally("tags"))
        theirs = set(
            (digest, content) for (digest, _), content in (await _signatures(dst, dst_id)).items()
        )

        def new_signature(row: dict[str, Any]) -> bool:
            content = hashlib.sha256(bytes(row["content"])).hexdigest()
            return (row["digest"], content) not in theirs

        await _copy_rows(
            src,
            dst,
            insert,
            simple_signatures,
            ids,
            result.tally("simple_signatures"),
            new_signature,
        )


async def _copy_global_rows(
    source: SqlMetadataStore, target: SqlMetadataStore, table: Table, tally: Tally
) -> None:
    """Rows keyed by content, not repository (blob records by digest, authority statements by
    id): what the target lacks is added; blobs go before the repositories that link them."""
    insert = insert_for(target.writer)
    async with target.reader.connect() as dst:
        before = await _count(dst, table)
    total = 0
    async with source.reader.connect() as src:
        result = await src.stream(select(table))
        async for batch in result.partitions(_BATCH):
            rows = [dict(row._mapping) for row in batch]
            total += len(rows)
            async with target.writer.begin() as dst:
                await dst.execute(insert(table).on_conflict_do_nothing(), rows)
    async with target.reader.connect() as dst:
        tally.copied += await _count(dst, table) - before
    tally.present += total - tally.copied


async def merge_tables(
    source: SqlMetadataStore, target: SqlMetadataStore, overwrite_tags: bool
) -> CopyResult:
    """Blobs, then each repository (one transaction each), then trust data, auth, the
    authority's statements and the audit log."""
    result = CopyResult()
    await _copy_global_rows(source, target, t.blobs, result.tally("blobs"))
    async with source.reader.connect() as src:
        repositories = await _repositories(src)
    for repository in repositories:
        try:
            await _copy_repository(source, target, repository, overwrite_tags, result)
        except TagConflict as exc:
            result.problems.append(f"repository {repository[1]} not copied: {exc}")
    await copy_trust(source.reader, target.writer, result)
    await copy_auth(source.reader, target.writer, result)
    statements = result.tally("authority_statements")
    await _copy_global_rows(source, target, authority_statements, statements)
    await copy_audit(source.reader, target.writer, result)
    return result


async def verify_tables(source: SqlMetadataStore, target: SqlMetadataStore) -> list[str]:
    """Every source tag resolves to the same digest on the target; manifests and signatures too."""
    out: list[str] = []
    async with source.reader.connect() as src, target.reader.connect() as dst:
        for src_id, name, _ in await _repositories(src):
            dst_id = await _repo_id(dst, name)
            if dst_id is None:
                out.append(f"repository {name} is missing from the target")
                continue
            theirs = await _tags(dst, dst_id)
            for tag, digest in sorted((await _tags(src, src_id)).items()):
                if theirs.get(tag) != digest:
                    out.append(f"tag {name}:{tag} is {theirs.get(tag)} on the target, not {digest}")
            m = t.manifests
            mine = set(
                (await src.execute(select(m.c.digest).where(m.c.repo_id == src_id))).scalars()
            )
            there = set(
                (await dst.execute(select(m.c.digest).where(m.c.repo_id == dst_id))).scalars()
            )
            out.extend(
                f"manifest {name}@{d} is missing from the target" for d in sorted(mine - there)
            )
            sigs = set((await _signatures(dst, dst_id)).values())
            for (digest, sig), content in sorted((await _signatures(src, src_id)).items()):
                if content not in sigs:
                    out.append(f"simple signature {name}@{digest} {sig} is missing from the target")
        blobs_there = set((await dst.execute(select(t.blobs.c.digest))).scalars())
        for digest in sorted(
            set((await src.execute(select(t.blobs.c.digest))).scalars()) - blobs_there
        ):
            out.append(f"blob record {digest} is missing from the target")
    out.extend(await verify_trust(source.reader, target.reader))
    return out


async def manifest_rows(store: SqlMetadataStore) -> AsyncIterator[tuple[str, bytes, str]]:
    """(digest, exact bytes, media type) of every stored manifest, streamed."""
    async with store.reader.connect() as conn:
        result = await conn.stream(
            select(t.manifests.c.digest, t.manifests.c.content, t.manifests.c.media_type)
        )
        async for row in result:
            yield row.digest, bytes(row.content), row.media_type


class SqlTables:
    """`metadata.copy_base.Tables` (the port `registry.migration` uses) over a SQL metadata store (built by the composition root)."""

    def __init__(self, store: SqlMetadataStore) -> None:
        self.store = store

    async def blob_digests(self) -> set[str]:
        return await self.store.blob_digests()

    async def conflicts(self, target: SqlTables, *, overwrite_tags: bool) -> list[str]:
        found = await registry_conflicts(self.store, target.store, overwrite_tags)
        return found + await trust_conflicts(self.store.reader, target.store.reader)

    async def copy_to(self, target: SqlTables, *, overwrite_tags: bool) -> CopyResult:
        return await merge_tables(self.store, target.store, overwrite_tags)

    async def verify(self, target: SqlTables) -> list[str]:
        return await verify_tables(self.store, target.store)

    def manifest_rows(self) -> AsyncIterator[tuple[str, bytes, str]]:
        return manifest_rows(self.store)
