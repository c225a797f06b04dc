"""GC marking in SQL: registry/gc_mark.py's rules as one recursive CTE, so only dead rows leave
the database (issue 24: marking a million manifests without loading them into Python).

`gc_mark.mark` stays the specification: tests/contracts/test_gc_sql_contract.py checks on random
stores, on SQLite and PostgreSQL, that `sql_plan` returns exactly its plan.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    text,
    union,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateTable, DropTable

from trustyard.metadata import schema as t
from trustyard.metadata.base import GcPlan
from trustyard.metadata.lifecycle_sql import tag_history
from trustyard.oci.digest import Digest

# gc_mark._ATTACHMENT_TAG, in the POSIX ERE both PostgreSQL (`~`) and SQLAlchemy's SQLite
# REGEXP function understand.
_ATTACHMENT_RE = r"^(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})(\.sig|\.att|\.sbom)?$"

# The live set, computed once into indexed temporary tables (a CTE the four dead-row queries
# each name would be walked, unindexed, per use on SQLite); dropped before the pass commits.
_temp = MetaData()
_live_table = Table(
    "gc_live",
    _temp,
    Column("repo_id", Integer, primary_key=True),
    Column("digest", String(200), primary_key=True),
    prefixes=["TEMPORARY"],
)
# manifest -> manifest edges within a repository (children, referrers, attachment tags): a
# table, so that the recursive step looks a parent's edges up by index
_edges_table = Table(
    "gc_edges",
    _temp,
    Column("repo_id", Integer, primary_key=True),
    Column("parent", String(200), primary_key=True),
    Column("child", String(200), primary_key=True),
    prefixes=["TEMPORARY"],
)
# blobs a live manifest names, per repository (`digest` first: the blob sweep asks by digest)
_live_blobs_table = Table(
    "gc_live_blobs",
    _temp,
    Column("digest", String(200), primary_key=True),
    Column("repo_id", Integer, primary_key=True),
    prefixes=["TEMPORARY"],
)


def _attachment_tags() -> Any:
    """Cosign attachment tags with the subject digest they are named after."""
    tg = t.tags
    subject = case(
        (tg.c.name.like("sha256-%"), literal("sha256:") + func.substr(tg.c.name, 8, 64)),
        else_=literal("sha512:") + func.substr(tg.c.name, 8, 128),
    )
    return (
        select(tg.c.repo_id, tg.c.name, tg.c.digest, subject.label("subject"))
        .where(tg.c.name.like("sha%"), tg.c.name.regexp_match(_ATTACHMENT_RE))
        .cte("attachments")
    )


def _edges(attachments: Any) -> Any:
    """What fills `gc_edges` (UNION: an edge named twice is stored once)."""
    m, refs = t.manifests, t.manifest_refs
    return union(
        select(refs.c.repo_id, refs.c.parent, refs.c.child).where(refs.c.kind == "manifest"),
        select(m.c.repo_id, m.c.subject, m.c.digest).where(m.c.subject.is_not(None)),
        select(attachments.c.repo_id, attachments.c.subject, attachments.c.digest),
    )


def _live(cutoff: float, history_since: float | None, attachments: Any) -> Any:
    """(repo_id, digest) of every live manifest: existing roots and what they reach."""
    m, tg = t.manifests, t.tags
    is_attachment = exists().where(
        attachments.c.repo_id == tg.c.repo_id, attachments.c.name == tg.c.name
    )
    root_parts = [
        select(tg.c.repo_id, tg.c.digest).where(~is_attachment),
        select(m.c.repo_id, m.c.digest).where(m.c.created_at >= cutoff),
    ]
    if history_since is not None:
        h = tag_history
        root_parts.append(
            select(t.repositories.c.id, h.c.old_digest)
            .join(t.repositories, t.repositories.c.name == h.c.repository)
            .where(h.c.old_digest.is_not(None), h.c.at >= history_since)
        )
    roots = union_all(*root_parts).cte("roots")
    edges = _edges_table
    anchor = (
        select(m.c.repo_id, m.c.digest)
        .join(roots, and_(roots.c.repo_id == m.c.repo_id, roots.c.digest == m.c.digest))
        .cte("live", recursive=True)
    )
    nxt = m.alias("nxt")
    step = (
        select(nxt.c.repo_id, nxt.c.digest)
        .select_from(anchor)
        .join(edges, and_(edges.c.repo_id == anchor.c.repo_id, edges.c.parent == anchor.c.digest))
        .join(nxt, and_(nxt.c.repo_id == edges.c.repo_id, nxt.c.digest == edges.c.child))
    )
    # UNION, not UNION ALL: a row reached twice (or through a cycle) is not walked again
    return anchor.union(step)


_NO_SIZE = cast(null(), BigInteger)  # typed: PostgreSQL matches UNION column types


async def sql_plan(
    conn: AsyncConnection, cutoff: float, history_since: float | None = None
) -> tuple[dict[str, int], GcPlan]:
    """Repository ids by name, and `gc_mark.mark`'s plan, computed by the database (inside
    the caller's transaction, which must hold GC's exclusive lock)."""
    for table in _temp.sorted_tables:
        await conn.execute(DropTable(table, if_exists=True))
        await conn.execute(CreateTable(table))
    found = await _plan(conn, cutoff, history_since)
    # No `finally`: after an error PostgreSQL refuses statements until rollback, and the
    # rollback undoes the CREATEs anyway (both backends create tables transactionally).
    for table in _temp.sorted_tables:
        await conn.execute(DropTable(table, if_exists=True))
    return found


async def _plan(
    conn: AsyncConnection, cutoff: float, history_since: float | None
) -> tuple[dict[str, int], GcPlan]:
    m, refs, rb, b = t.manifests, t.manifest_refs, t.repo_blobs, t.blobs
    attachments = _attachment_tags()
    await conn.execute(
        insert(_edges_table).from_select(["repo_id", "parent", "child"], _edges(attachments))
    )
    if conn.dialect.name == "postgresql":  # a fresh temporary table has no statistics
        await conn.execute(text("ANALYZE gc_edges"))
    walk = _live(cutoff, history_since, attachments)
    await conn.execute(
        insert(_live_table).from_select(
            ["repo_id", "digest"], select(walk.c.repo_id, walk.c.digest)
        )
    )
    live, live_blobs = _live_table, _live_blobs_table
    await conn.execute(
        insert(_live_blobs_table).from_select(
            ["digest", "repo_id"],
            select(refs.c.child, refs.c.repo_id)
            .join(live, and_(live.c.repo_id == refs.c.repo_id, live.c.digest == refs.c.parent))
            .where(refs.c.kind != "manifest")
            .distinct(),
        )
    )
    is_live = exists().where(live.c.repo_id == m.c.repo_id, live.c.digest == m.c.digest)
    dead_manifests = select(literal("m").label("kind"), m.c.repo_id, m.c.digest, _NO_SIZE).where(
        ~is_live
    )
    subject_live = exists().where(
        live.c.repo_id == attachments.c.repo_id, live.c.digest == attachments.c.subject
    )
    dead_tags = select(literal("t"), attachments.c.repo_id, attachments.c.name, _NO_SIZE).where(
        ~subject_live
    )
    named_live = exists().where(
        live_blobs.c.repo_id == rb.c.repo_id, live_blobs.c.digest == rb.c.digest
    )
    dead_links = select(literal("l"), rb.c.repo_id, rb.c.digest, _NO_SIZE).where(
        rb.c.linked_at < cutoff, ~named_live
    )
    # A blob stays while a link kept above names it (live or recent) or a live manifest does.
    fresh_link = exists().where(rb.c.digest == b.c.digest, rb.c.linked_at >= cutoff)
    referenced = exists().where(live_blobs.c.digest == b.c.digest)
    dead_blobs = select(literal("b"), cast(null(), Integer), b.c.digest, b.c.size).where(
        b.c.last_seen < cutoff, ~fresh_link, ~referenced
    )
    query = union_all(dead_manifests, dead_tags, dead_links, dead_blobs)
    names = {
        r.id: r.name
        for r in (await conn.execute(select(t.repositories.c.id, t.repositories.c.name))).all()
    }
    plan = GcPlan()
    for kind, repo_id, value, size in (await conn.execute(query)).all():
        if kind == "m":
            plan.manifests.append((names[repo_id], Digest.parse(value)))
        elif kind == "t":
            plan.tags.append((names[repo_id], value))
        elif kind == "l":
            plan.links.append((names[repo_id], Digest.parse(value)))
        else:
            plan.blobs.append((Digest.parse(value), int(size)))
    plan.manifests.sort(key=lambda row: (row[0], str(row[1])))
    plan.tags.sort()
    plan.links.sort(key=lambda row: (row[0], str(row[1])))
    plan.blobs.sort(key=lambda row: str(row[0]))
    return {name: repo_id for repo_id, name in names.items()}, plan
