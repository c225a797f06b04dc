"""The metadata store on SQL (SQLAlchemy Core, async). SQLite and PostgreSQL share this code.

Reads go through `reader`; every write runs in one transaction on `writer`, which serialises
writers (SQLite: BEGIN IMMEDIATE) so the checks a write makes still hold when it commits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import and_, delete, exists, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trustyard.metadata import schema as t
from trustyard.metadata.base import (
    BlobSweeper,
    GcBlob,
    GcHistory,
    GcLink,
    GcManifest,
    GcMarker,
    GcPlan,
    GcRef,
    GcSnapshot,
    GcTag,
    ManifestRecord,
    UploadRecord,
)
from trustyard.metadata.errors import MissingReference
from trustyard.metadata.events_base import OutboxEntry
from trustyard.metadata.events_sql import insert_outbox
from trustyard.metadata.gc_sql import sql_plan
from trustyard.metadata.lifecycle_base import TagMove
from trustyard.metadata.lifecycle_sql import history_rows, record_moves
from trustyard.metadata.sql_statements import push_statements
from trustyard.metadata.units import unit_writer
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import Descriptor, Manifest, stored_blobs

# Advisory-lock key shared by every writer (shared mode) and GC (exclusive mode) on PostgreSQL.
WRITE_LOCK_KEY = 0x7472757374  # "trust"


class SqlMetadataStore:
    """Implements `MetadataStore` on any SQLAlchemy async engine pair."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer
        self.units = unit_writer(writer)
        self._dialect = writer.dialect.name
        self._push = push_statements(self._dialect)

    async def close(self) -> None:
        await self.reader.dispose()
        if self.writer is not self.reader:
            await self.writer.dispose()

    # -- helpers -------------------------------------------------------------------------------
    async def _exclusive(self, conn: AsyncConnection) -> None:
        """Exclude every other writer for this transaction (GC's mark and sweep).

        SQLite writers are already serialised by BEGIN IMMEDIATE; PostgreSQL writers hold the
        shared side of one advisory lock (see metadata/postgres.py), GC takes the exclusive side.
        """
        if self._dialect == "postgresql":
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")

    def _repo_id(self, conn: Connection, name: str) -> int | None:
        value = conn.execute(self._push.repo_id, {"name": name}).scalar_one_or_none()
        return int(value) if value is not None else None

    def _ensure_repo(self, conn: Connection, name: str) -> int:
        repo_id = self._repo_id(conn, name)
        if repo_id is not None:
            return repo_id
        conn.execute(self._push.add_repo, {"name": name, "created_at": time.time()})
        repo_id = self._repo_id(conn, name)
        assert repo_id is not None
        return repo_id

    # -- blobs ---------------------------------------------------------------------------------
    async def link_blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        finished_upload: str | None = None,
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> None:
        now = time.time()
        blob = {"digest": str(digest), "size": size, "created_at": now, "last_seen": now}

        def unit(conn: Connection) -> None:
            insert_outbox(conn, events, now)
            if finished_upload is not None:
                # One transaction instead of two per pushed blob (the upload row is done).
                conn.execute(self._push.drop_upload, {"upload_id": finished_upload})
            repo_id = self._ensure_repo(conn, repository)
            conn.execute(self._push.put_blob, blob)
            conn.execute(
                self._push.link, {"repo_id": repo_id, "digest": blob["digest"], "linked_at": now}
            )

        await self.units.run(unit)

    async def mount_blob(
        self,
        repository: str,
        digest: Digest,
        source: str | None,
        *,
        events: Callable[[int], Sequence[OutboxEntry]] | None = None,
    ) -> int | None:
        now = time.time()
        blob = str(digest)

        def unit(conn: Connection) -> int | None:
            if source is None:
                size = conn.execute(self._push.blob_size, {"blob": blob}).scalar_one_or_none()
            else:
                found = conn.execute(self._push.blob_size_in, {"blob": blob, "source": source})
                size = found.scalar_one_or_none()
            if size is None:
                return None
            if events is not None:
                insert_outbox(conn, events(int(size)), now)
            repo_id = self._ensure_repo(conn, repository)
            conn.execute(self._push.touch_blob, {"blob": blob, "now": now})
            conn.execute(self._push.link, {"repo_id": repo_id, "digest": blob, "linked_at": now})
            return int(size)

        return await self.units.run(unit)

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        query = (
            select(t.blobs.c.size)
            .join(t.repo_blobs, t.repo_blobs.c.digest == t.blobs.c.digest)
            .join(t.repositories, t.repositories.c.id == t.repo_blobs.c.repo_id)
            .where(t.repositories.c.name == repository, t.blobs.c.digest == str(digest))
        )
        async with self.reader.connect() as conn:
            size = (await conn.execute(query)).scalar_one_or_none()
        return int(size) if size is not None else None

    async def unlink_blob(
        self, repository: str, digest: Digest, *, events: Sequence[OutboxEntry] = ()
    ) -> bool:
        def unit(conn: Connection) -> bool:
            repo_id = self._repo_id(conn, repository)
            if repo_id is None:
                return False
            result = conn.execute(
                delete(t.repo_blobs).where(
                    t.repo_blobs.c.repo_id == repo_id, t.repo_blobs.c.digest == str(digest)
                )
            )
            if result.rowcount:
                insert_outbox(conn, events, time.time())
            return bool(result.rowcount)

        return await self.units.run(unit)

    # -- manifests -----------------------------------------------------------------------------
    @staticmethod
    def _missing(conn: Connection, query: Any, repo_id: int, digests: set[str]) -> str | None:
        """The first of `digests` that `query` (linked blobs, stored manifests) lacks."""
        if not digests:
            return None
        found = set(conn.execute(query, {"repo_id": repo_id, "digests": list(digests)}).scalars())
        missing = sorted(digests - found)
        return missing[0] if missing else None

    async def put_manifest(
        self,
        repository: str,
        manifest: Manifest,
        content: bytes,
        tags: list[str],
        *,
        optional_children: frozenset[Digest] = frozenset(),
        events: Sequence[OutboxEntry] | Callable[[dict[str, str]], Sequence[OutboxEntry]] = (),
        actor: str | None = None,
        optional_blobs: frozenset[Digest] = frozenset(),
    ) -> dict[str, str]:
        now = time.time()
        digest = str(manifest.digest)
        wanted = {str(d) for d in stored_blobs(manifest)}
        children = {str(c.digest) for c in manifest.children}
        required_blobs = wanted - {str(d) for d in optional_blobs}
        required = children - {str(d) for d in optional_children}
        row = {
            "digest": digest,
            "media_type": manifest.media_type,
            "size": manifest.size,
            "content": content,
            "subject": str(manifest.subject) if manifest.subject else None,
            "artifact_type": manifest.artifact_type,
            "annotations": json.dumps(manifest.annotations) if manifest.annotations else None,
            "created_at": now,
        }
        refs = [{"child": c, "kind": "blob"} for c in wanted] + [
            {"child": c, "kind": "manifest"} for c in children
        ]

        def unit(conn: Connection) -> dict[str, str]:
            repo_id = self._ensure_repo(conn, repository)
            before = self._tag_digests(conn, repo_id, tags)
            insert_outbox(conn, events(before) if callable(events) else events, now)
            missing = self._missing(conn, self._push.linked_blobs, repo_id, required_blobs)
            if missing:
                raise MissingReference(repository, missing, "blob")
            missing = self._missing(conn, self._push.stored_manifests, repo_id, required)
            if missing:
                raise MissingReference(repository, missing, "manifest")
            conn.execute(self._push.put_manifest, {"repo_id": repo_id, **row})
            if refs:
                conn.execute(
                    self._push.add_refs, [{"repo_id": repo_id, "parent": digest, **r} for r in refs]
                )
            record_moves(conn, _moves(repository, tags, before, digest, actor, now))
            if tags:
                conn.execute(
                    self._push.put_tag,
                    [
                        {"repo_id": repo_id, "name": tag, "digest": digest, "updated_at": now}
                        for tag in tags
                    ],
                )
            return before

        return await self.units.run(unit)

    def _tag_digests(self, conn: Connection, repo_id: int, tags: list[str]) -> dict[str, str]:
        """Where `tags` point now (the tags that exist)."""
        if not tags:
            return {}
        rows = conn.execute(self._push.tag_digests, {"repo_id": repo_id, "tags": tags})
        return {n: d for n, d in rows.all()}

    def _record_tag_moves(
        self,
        conn: Connection,
        repo_id: int,
        repository: str,
        tags: list[str],
        digest: str | None,
        actor: str | None,
        now: float,
    ) -> None:
        """History rows for `tags` about to point at `digest` (None: about to be deleted)."""
        before = self._tag_digests(conn, repo_id, tags)
        record_moves(conn, _moves(repository, tags, before, digest, actor, now))

    async def get_manifest(self, repository: str, reference: str | Digest) -> ManifestRecord | None:
        m = t.manifests
        query = (
            select(
                m.c.digest, m.c.media_type, m.c.size, m.c.content, m.c.subject, m.c.artifact_type
            )
            .join(t.repositories, t.repositories.c.id == m.c.repo_id)
            .where(t.repositories.c.name == repository)
        )
        if isinstance(reference, Digest):
            query = query.where(m.c.digest == str(reference))
        else:
            query = query.join(
                t.tags, and_(t.tags.c.repo_id == m.c.repo_id, t.tags.c.digest == m.c.digest)
            ).where(t.tags.c.name == reference)
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return ManifestRecord(
            repository=repository,
            digest=Digest.parse(row.digest),
            media_type=row.media_type,
            size=row.size,
            content=bytes(row.content),
            subject=Digest.parse(row.subject) if row.subject else None,
            artifact_type=row.artifact_type,
        )

    async def delete_manifest(
        self,
        repository: str,
        digest: Digest,
        actor: str | None = None,
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> bool:
        def unit(conn: Connection) -> bool:
            repo_id = self._repo_id(conn, repository)
            if repo_id is None:
                return False
            tagged = select(t.tags.c.name).where(
                t.tags.c.repo_id == repo_id, t.tags.c.digest == str(digest)
            )
            names = list(conn.execute(tagged).scalars())
            self._record_tag_moves(conn, repo_id, repository, names, None, actor, time.time())
            removed = self._delete_manifests(conn, [(repo_id, str(digest))])
            result = conn.execute(
                delete(t.tags).where(t.tags.c.repo_id == repo_id, t.tags.c.digest == str(digest))
            )
            found = removed > 0 or bool(result.rowcount)
            if found:
                insert_outbox(conn, events, time.time())
            return found

        return await self.units.run(unit)

    @staticmethod
    def _delete_manifests(conn: Connection, items: Iterable[tuple[int, str]]) -> int:
        count = 0
        for repo_id, digest in items:
            conn.execute(
                delete(t.manifest_refs).where(
                    t.manifest_refs.c.repo_id == repo_id, t.manifest_refs.c.parent == digest
                )
            )
            result = conn.execute(
                delete(t.manifests).where(
                    t.manifests.c.repo_id == repo_id, t.manifests.c.digest == digest
                )
            )
            count += result.rowcount
        return count

    async def delete_tag(
        self,
        repository: str,
        tag: str,
        actor: str | None = None,
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> bool:
        def unit(conn: Connection) -> bool:
            repo_id = self._repo_id(conn, repository)
            if repo_id is None:
                return False
            self._record_tag_moves(conn, repo_id, repository, [tag], None, actor, time.time())
            result = conn.execute(
                delete(t.tags).where(t.tags.c.repo_id == repo_id, t.tags.c.name == tag)
            )
            if result.rowcount:
                insert_outbox(conn, events, time.time())
            return bool(result.rowcount)

        return await self.units.run(unit)

    async def referrers(
        self, repository: str, subject: Digest, artifact_type: str | None
    ) -> list[Descriptor]:
        m = t.manifests
        query = (
            select(m.c.digest, m.c.media_type, m.c.size, m.c.artifact_type, m.c.annotations)
            .join(t.repositories, t.repositories.c.id == m.c.repo_id)
            .where(t.repositories.c.name == repository, m.c.subject == str(subject))
            .order_by(m.c.digest)
        )
        if artifact_type is not None:
            query = query.where(m.c.artifact_type == artifact_type)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Descriptor(
                media_type=r.media_type,
                digest=Digest.parse(r.digest),
                size=r.size,
                artifact_type=r.artifact_type,
                annotations=json.loads(r.annotations) if r.annotations else None,
            )
            for r in rows
        ]

    # -- catalog -------------------------------------------------------------------------------
    async def repository_exists(self, repository: str) -> bool:
        async with self.reader.connect() as conn:
            return await conn.run_sync(self._repo_id, repository) is not None

    async def list_tags(self, repository: str, limit: int, last: str | None) -> list[str]:
        return await self._page_of(t.tags.c.repo_id, t.tags.c.name, repository, limit, last)

    async def list_manifests(self, repository: str, limit: int, last: str | None) -> list[str]:
        return await self._page_of(
            t.manifests.c.repo_id, t.manifests.c.digest, repository, limit, last
        )

    async def _page_of(
        self, repo_col: Any, key: Any, repository: str, limit: int, last: str | None
    ) -> list[str]:
        """One repository's keys after `last`, in order. The repository id by subquery, not a
        join: the planner then walks the (repo_id, key) index in order and stops after `limit`
        rows, whatever the repository's size."""
        repo_id = (
            select(t.repositories.c.id).where(t.repositories.c.name == repository).scalar_subquery()
        )
        query = select(key).where(repo_col == repo_id).order_by(key).limit(limit)
        if last is not None:
            query = query.where(key > last)
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def list_repositories(self, limit: int, last: str | None) -> list[str]:
        r = t.repositories
        name = r.c.name
        query = (
            select(r.c.name)
            .where(exists().where(t.manifests.c.repo_id == r.c.id))
            .order_by(name)
            .limit(limit)
        )
        if last is not None:
            query = query.where(name > last)
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).scalars())

    # -- uploads -------------------------------------------------------------------------------
    async def create_upload(self, upload_id: str, repository: str) -> None:
        def unit(conn: Connection) -> None:
            repo_id = self._ensure_repo(conn, repository)
            row = {"id": upload_id, "repo_id": repo_id, "started_at": time.time()}
            conn.execute(self._push.add_upload, row)

        await self.units.run(unit)

    async def get_upload(self, upload_id: str) -> UploadRecord | None:
        query = (
            select(t.uploads.c.id, t.repositories.c.name, t.uploads.c.started_at)
            .join(t.repositories, t.repositories.c.id == t.uploads.c.repo_id)
            .where(t.uploads.c.id == upload_id)
        )
        async with self.reader.connect() as conn:
            row = (await conn.execute(query)).first()
        return UploadRecord(row.id, row.name, row.started_at) if row else None

    async def delete_upload(self, upload_id: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(self._push.drop_upload, {"upload_id": upload_id})

        await self.units.run(unit)

    async def list_uploads(self) -> list[UploadRecord]:
        query = select(t.uploads.c.id, t.repositories.c.name, t.uploads.c.started_at).join(
            t.repositories, t.repositories.c.id == t.uploads.c.repo_id
        )
        async with self.reader.connect() as conn:
            return [
                UploadRecord(r.id, r.name, r.started_at) for r in (await conn.execute(query)).all()
            ]

    # -- garbage collection --------------------------------------------------------------------
    async def collect(
        self,
        cutoff: float,
        *,
        mark: GcMarker | None,
        dry_run: bool,
        on_blob_deleted: BlobSweeper,
        history_since: float | None = None,
    ) -> GcPlan:
        """Mark and sweep inside one write transaction, so no push interleaves with it (the
        marking rules are registry/gc_mark.py's; without `mark`, gc_sql.py runs them in SQL)."""
        async with self.writer.begin() as conn:
            await self._exclusive(conn)
            if mark is None:
                ids, plan = await sql_plan(conn, cutoff, history_since)
            else:
                ids, snapshot = await self._gc_snapshot(conn)
                plan = mark(snapshot, cutoff)
            if not dry_run:
                await self._gc_apply(conn, ids, plan, cutoff, on_blob_deleted)
        return plan

    @staticmethod
    async def _gc_snapshot(conn: AsyncConnection) -> tuple[dict[str, int], GcSnapshot]:
        """Repository ids by name, and every row the marking reads (names instead of ids)."""
        repos = (await conn.execute(select(t.repositories.c.id, t.repositories.c.name))).all()
        names: dict[int, str] = {r.id: r.name for r in repos}
        m, refs, tg, rb = t.manifests, t.manifest_refs, t.tags, t.repo_blobs
        manifests = await conn.execute(select(m.c.repo_id, m.c.digest, m.c.subject, m.c.created_at))
        ref_rows = await conn.execute(
            select(refs.c.repo_id, refs.c.parent, refs.c.child, refs.c.kind)
        )
        tag_rows = await conn.execute(select(tg.c.repo_id, tg.c.name, tg.c.digest))
        links = await conn.execute(select(rb.c.repo_id, rb.c.digest, rb.c.linked_at))
        blobs = await conn.execute(select(t.blobs.c.digest, t.blobs.c.size, t.blobs.c.last_seen))
        history = await conn.run_sync(history_rows)
        snapshot = GcSnapshot(
            manifests=[GcManifest(names[r], d, s, c) for r, d, s, c in manifests],
            refs=[GcRef(names.get(r, ""), p, c, k) for r, p, c, k in ref_rows],
            tags=[GcTag(names[r], n, d) for r, n, d in tag_rows],
            links=[GcLink(names[r], d, at) for r, d, at in links],
            blobs=[GcBlob(d, int(size), seen) for d, size, seen in blobs],
            history=[GcHistory(r, d, at) for r, d, at in history],
        )
        return {name: repo_id for repo_id, name in names.items()}, snapshot

    async def _gc_apply(
        self,
        conn: AsyncConnection,
        ids: dict[str, int],
        plan: GcPlan,
        cutoff: float,
        on_blob_deleted: BlobSweeper,
    ) -> None:
        def rows(sync: Connection) -> None:
            self._delete_manifests(sync, [(ids[r], str(d)) for r, d in plan.manifests])
            for repository, tag in plan.tags:
                repo_id = ids[repository]
                self._record_tag_moves(sync, repo_id, repository, [tag], None, "gc", time.time())
                sync.execute(
                    delete(t.tags).where(t.tags.c.repo_id == repo_id, t.tags.c.name == tag)
                )
            for repository, digest in plan.links:
                sync.execute(
                    delete(t.repo_blobs).where(
                        t.repo_blobs.c.repo_id == ids[repository],
                        t.repo_blobs.c.digest == str(digest),
                    )
                )

        await conn.run_sync(rows)
        # Bytes go while the write lock is held: a push links a blob in a write transaction,
        # so it waits for us, and a blob renamed into place meanwhile is newer than
        # `cutoff`, which the sweeper checks before unlinking the file.
        for digest, _ in plan.blobs:
            await conn.execute(delete(t.blobs).where(t.blobs.c.digest == str(digest)))
            await on_blob_deleted(digest, cutoff)

    async def blob_digests(self) -> set[str]:
        """Every blob digest the metadata knows (for the orphan-file sweep)."""
        async with self.reader.connect() as conn:
            return set((await conn.execute(select(t.blobs.c.digest))).scalars())

    async def counts(self) -> dict[str, int]:
        async with self.reader.connect() as conn:
            out = {}
            for name, table in (
                ("repositories", t.repositories),
                ("manifests", t.manifests),
                ("tags", t.tags),
                ("blobs", t.blobs),
            ):
                out[name] = int(
                    (await conn.execute(select(func.count()).select_from(table))).scalar_one()
                )
            return out


def _moves(
    repository: str,
    tags: list[str],
    before: dict[str, str],
    digest: str | None,
    actor: str | None,
    now: float,
) -> list[TagMove]:
    """The tag history rows of `tags` moving from `before` to `digest` (None: deleted)."""
    return [
        TagMove(repository, tag, before.get(tag), digest, actor, now)
        for tag in tags
        if before.get(tag) != digest and (digest is not None or tag in before)
    ]
