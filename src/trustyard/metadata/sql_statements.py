"""The push path's statements, built once per dialect with bound parameters.

Building a Core statement per call (`select(...).where(col == value)`) costs more Python than
running it: SQLAlchemy constructs the expression and walks it for its cache key every time.
A statement built once keeps its memoized cache key, so a unit of work (metadata/units.py)
only binds values. Measured with py-spy on 16 clients writing tags: statement construction and
cache keys were ~20 % of the writer thread's samples (docs/benchmarks.md, second round).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from trustyard.metadata import schema as t


@dataclass(frozen=True)
class PushStatements:
    repo_id: Any  # :name -> id
    add_repo: Any  # name, created_at (ignored when it exists)
    tag_digests: Any  # :repo_id, :tags (expanding) -> (name, digest)
    linked_blobs: Any  # :repo_id, :digests (expanding) -> digest
    stored_manifests: Any  # :repo_id, :digests (expanding) -> digest
    put_blob: Any  # digest, size, created_at, last_seen (upsert: last_seen, size)
    touch_blob: Any  # :blob, :now
    blob_size: Any  # :blob -> size
    blob_size_in: Any  # :blob, :source (a repository holding it) -> size
    link: Any  # repo_id, digest, linked_at (upsert: linked_at)
    put_manifest: Any  # every manifests column (upsert: created_at)
    add_refs: Any  # repo_id, parent, child, kind (ignored when they exist)
    put_tag: Any  # repo_id, name, digest, updated_at (upsert: digest, updated_at)
    add_upload: Any  # id, repo_id, started_at
    drop_upload: Any  # :upload_id


@cache
def push_statements(dialect: str) -> PushStatements:
    """The statements for `dialect` ("sqlite" or "postgresql"): ON CONFLICT is dialect syntax."""
    upsert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    r, b, rb, m, tg = t.repositories, t.blobs, t.repo_blobs, t.manifests, t.tags
    put_blob = upsert(b)
    link = upsert(rb)
    put_manifest = upsert(m)
    put_tag = upsert(tg)
    return PushStatements(
        repo_id=select(r.c.id).where(r.c.name == bindparam("name")),
        add_repo=upsert(r).on_conflict_do_nothing(),
        tag_digests=select(tg.c.name, tg.c.digest).where(
            tg.c.repo_id == bindparam("repo_id"), tg.c.name.in_(bindparam("tags", expanding=True))
        ),
        linked_blobs=select(rb.c.digest).where(
            rb.c.repo_id == bindparam("repo_id"),
            rb.c.digest.in_(bindparam("digests", expanding=True)),
        ),
        stored_manifests=select(m.c.digest).where(
            m.c.repo_id == bindparam("repo_id"),
            m.c.digest.in_(bindparam("digests", expanding=True)),
        ),
        put_blob=put_blob.on_conflict_do_update(
            index_elements=["digest"],
            set_={"last_seen": put_blob.excluded.last_seen, "size": put_blob.excluded.size},
        ),
        touch_blob=update(b)
        .where(b.c.digest == bindparam("blob"))
        .values(last_seen=bindparam("now")),
        blob_size=select(b.c.size).where(b.c.digest == bindparam("blob")),
        blob_size_in=select(b.c.size)
        .join(rb, rb.c.digest == b.c.digest)
        .join(r, r.c.id == rb.c.repo_id)
        .where(b.c.digest == bindparam("blob"), r.c.name == bindparam("source"))
        .limit(1),
        link=link.on_conflict_do_update(
            index_elements=["repo_id", "digest"], set_={"linked_at": link.excluded.linked_at}
        ),
        put_manifest=put_manifest.on_conflict_do_update(
            # A re-push makes the manifest live again: the grace period counts from it, as for
            # a re-uploaded blob (else GC may take a child re-pushed by digest before the index
            # naming it arrives; issue 19).
            index_elements=["repo_id", "digest"],
            set_={"created_at": put_manifest.excluded.created_at},
        ),
        add_refs=upsert(t.manifest_refs).on_conflict_do_nothing(),
        put_tag=put_tag.on_conflict_do_update(
            index_elements=["repo_id", "name"],
            set_={"digest": put_tag.excluded.digest, "updated_at": put_tag.excluded.updated_at},
        ),
        add_upload=insert(t.uploads),
        drop_upload=delete(t.uploads).where(t.uploads.c.id == bindparam("upload_id")),
    )
