"""The SQL marking (metadata/gc_sql.py) plans exactly what the pure rules (registry/gc_mark.py)
plan, on random stores, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert

from trustyard.metadata import schema as t
from trustyard.metadata.base import GcPlan
from trustyard.metadata.gc_sql import sql_plan
from trustyard.metadata.lifecycle_sql import tag_history
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.registry.gc_mark import mark
from trustyard.wiring import open_database

CUTOFF = 1000.0
HISTORY_SINCE = 500.0
REPOS = ["a", "b", "c/d"]


@pytest.fixture
async def store(target: Path | str) -> AsyncIterator[SqlMetadataStore]:
    meta = (await open_database(target, create=True)).metadata
    assert isinstance(meta, SqlMetadataStore)
    yield meta
    await meta.close()


def _digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(str(n).encode()).hexdigest()


# digests drawn from a small pool, so manifests, blobs, tags and edges collide often
digests = st.integers(0, 7).map(_digest)
repos = st.sampled_from(range(len(REPOS)))
times = st.sampled_from(
    [100.0, 500.0, 600.0, 999.0, 1000.0, 2000.0]
)  # old, in history window, recent


@st.composite
def attachment_names(draw: st.DrawFn) -> str:
    subject = draw(digests).replace(":", "-", 1)
    return subject + draw(st.sampled_from(["", ".sig", ".att", ".sbom", ".bad", "x"]))


tag_names = st.one_of(
    st.sampled_from(["latest", "v1", "sha256-nothex"]), attachment_names(), attachment_names()
)


@st.composite
def stores(draw: st.DrawFn) -> dict[str, list[Any]]:
    manifests = {
        (r, d): (draw(st.one_of(st.none(), digests)), draw(times))
        for r, d in draw(st.lists(st.tuples(repos, digests), max_size=14))
    }
    refs = {
        (r, p, c, k)
        for r, p, c, k in draw(
            st.lists(
                st.tuples(repos, digests, digests, st.sampled_from(["manifest", "blob"])),
                max_size=20,
            )
        )
    }
    tags = {
        (r, n): d for r, n, d in draw(st.lists(st.tuples(repos, tag_names, digests), max_size=10))
    }
    blobs = {
        d: (draw(st.integers(0, 10**12)), draw(times)) for d in draw(st.lists(digests, max_size=10))
    }
    links = (
        {
            (r, d): draw(times)
            for r, d in draw(
                st.lists(
                    st.tuples(repos, st.sampled_from(sorted(blobs)) if blobs else st.nothing()),
                    max_size=12,
                )
            )
        }
        if blobs
        else {}
    )
    history = draw(st.lists(st.tuples(repos, st.one_of(st.none(), digests), times), max_size=6))
    return {
        "repositories": [{"id": i + 1, "name": n, "created_at": 0.0} for i, n in enumerate(REPOS)],
        "blobs": [
            {"digest": d, "size": s, "created_at": 0.0, "last_seen": seen}
            for d, (s, seen) in blobs.items()
        ],
        "repo_blobs": [
            {"repo_id": r + 1, "digest": d, "linked_at": at} for (r, d), at in links.items()
        ],
        "manifests": [
            {
                "repo_id": r + 1,
                "digest": d,
                "media_type": "application/vnd.oci.image.manifest.v1+json",
                "size": 2,
                "content": b"{}",
                "subject": subject,
                "created_at": at,
            }
            for (r, d), (subject, at) in manifests.items()
        ],
        "manifest_refs": [
            {"repo_id": r + 1, "parent": p, "child": c, "kind": k} for r, p, c, k in refs
        ],
        "tags": [
            {"repo_id": r + 1, "name": n, "digest": d, "updated_at": 0.0}
            for (r, n), d in tags.items()
        ],
        "tag_history": [
            {"repository": REPOS[r], "tag": "v1", "old_digest": d, "new_digest": None, "at": at}
            for r, d, at in history
        ],
    }


def _canonical(plan: GcPlan) -> tuple[list[Any], ...]:
    return (
        [(r, str(d)) for r, d in plan.manifests],
        sorted(plan.tags),
        [(r, str(d)) for r, d in plan.links],
        [(str(d), size) for d, size in plan.blobs],
    )


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=stores(), with_history=st.booleans())
async def test_sql_plan_equals_python_plan(
    store: SqlMetadataStore, rows: dict[str, list[Any]], with_history: bool
) -> None:
    since = HISTORY_SINCE if with_history else None
    tables = {**{name: t.metadata.tables[name] for name in rows if name != "tag_history"}}
    tables["tag_history"] = tag_history
    async with store.writer.connect() as conn:
        trans = await conn.begin()
        try:
            for name in [
                "repositories",
                "blobs",
                "repo_blobs",
                "manifests",
                "manifest_refs",
                "tags",
                "tag_history",
            ]:
                if rows[name]:
                    await conn.execute(insert(tables[name]), rows[name])
            _, snapshot = await store._gc_snapshot(conn)
            expected = mark(snapshot, CUTOFF, history_since=since)
            _, actual = await sql_plan(conn, CUTOFF, since)
        finally:
            await trans.rollback()
    assert _canonical(actual) == _canonical(expected)
