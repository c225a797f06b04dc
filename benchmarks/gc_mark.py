"""Time and peak memory of the in-memory GC marking (registry/gc_mark.py) on synthetic snapshots.

    python -m benchmarks.gc_mark [N ...]            (default: 10000 100000 1000000)
    python -m benchmarks.gc_mark --sqlite [N ...]   (default: 10000 100000)
    python -m benchmarks.gc_mark --sqlite-python [N ...]

N manifests in N/1000 repositories, each with 2 blob refs and one link per blob; a tenth are
multi-arch indexes over 2 children, a tenth carry a referrer, a third are tagged, half are old.
Peak memory (tracemalloc) covers the snapshot rows as the SQL backend builds them plus the
marking; the figures decide when a recursive CTE should replace in-memory marking (gc.py).
With --sqlite the rows go into a fresh SQLite store and one dry-run `collect` is timed: the
pause pushes see, without the deletes; it marks in SQL (metadata/gc_sql.py) as GC does, or,
with --sqlite-python, reads the snapshot and marks in Python as GC did before.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from trustyard.metadata import schema as t
from trustyard.metadata.base import GcBlob, GcLink, GcManifest, GcRef, GcSnapshot, GcTag
from trustyard.oci.digest import Digest
from trustyard.registry.gc_mark import mark
from trustyard.wiring import open_database

CUTOFF = 1000.0


def _digest(i: int, kind: str) -> str:
    return "sha256:" + hashlib.sha256(f"{kind}{i}".encode()).hexdigest()


def snapshot(n: int) -> GcSnapshot:
    repos = [f"org/repo{r}" for r in range(max(1, n // 1000))]
    manifests, refs, tags, links, blobs = [], [], [], [], []
    for i in range(n):
        repo = repos[i % len(repos)]
        digest = _digest(i, "m")
        subject = _digest(i - 1, "m") if i % 10 == 5 else None
        manifests.append(GcManifest(repo, digest, subject, 10.0 if i % 2 else 2000.0))
        for k in range(2):
            blob = _digest(i * 2 + k, "b")
            refs.append(GcRef(repo, digest, blob, "blob"))
            links.append(GcLink(repo, blob, 10.0))
            blobs.append(GcBlob(blob, 1024, 10.0))
        if i % 10 == 9:  # an index over the two manifests before it
            refs += [GcRef(repo, digest, _digest(i - k, "m"), "manifest") for k in (1, 2)]
        if i % 3 == 0:
            tags.append(GcTag(repo, f"v{i}", digest))
    return GcSnapshot(manifests, refs, tags, links, blobs)


def measure(n: int) -> tuple[float, float, float, int]:
    """(snapshot MiB, marking seconds, peak MiB of snapshot plus marking, dead manifests).

    CPU time (other work on the machine skews wall time), measured without tracemalloc (it
    slows allocation down several times), then the memory traced in a second run."""
    snap = snapshot(n)
    gc.collect()
    started = time.process_time()
    dead = len(mark(snap, CUTOFF).manifests)
    seconds = time.process_time() - started
    del snap
    gc.collect()
    tracemalloc.start()
    snap = snapshot(n)
    held, _ = tracemalloc.get_traced_memory()
    mark(snap, CUTOFF)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held / 2**20, seconds, peak / 2**20, dead


def _rows(snap: GcSnapshot, ids: dict[str, int]) -> list[tuple[Any, list[dict[str, Any]]]]:
    manifest = {"media_type": "x", "size": 1, "content": b"", "annotations": None}
    return [
        (
            t.manifests,
            [
                {"repo_id": ids[r], "digest": d, "subject": s, "created_at": at, **manifest}
                for r, d, s, at in snap.manifests
            ],
        ),
        (
            t.manifest_refs,
            [{"repo_id": ids[r], "parent": p, "child": c, "kind": k} for r, p, c, k in snap.refs],
        ),
        (
            t.tags,
            [
                {"repo_id": ids[r], "name": n, "digest": d, "updated_at": 0.0}
                for r, n, d in snap.tags
            ],
        ),
        (
            t.blobs,
            [
                {"digest": d, "size": z, "created_at": at, "last_seen": at}
                for d, z, at in snap.blobs
            ],
        ),
        (
            t.repo_blobs,
            [{"repo_id": ids[r], "digest": d, "linked_at": at} for r, d, at in snap.links],
        ),
    ]


async def _never(digest: Digest, cutoff: float) -> bool:
    raise AssertionError("a dry run sweeps nothing")


async def measure_sqlite(n: int, *, in_sql: bool = True) -> tuple[float, int]:
    """(seconds of one dry-run collect, dead manifests) on a SQLite store holding `snapshot(n)`:
    marking in SQL as `collect_garbage` does, or (`in_sql=False`) from a snapshot in Python."""
    with tempfile.TemporaryDirectory() as tmp:
        database = await open_database(Path(tmp) / "metadata.db", create=True)
        store = database.metadata
        snap = snapshot(n)
        names = sorted({m.repository for m in snap.manifests})
        ids = {name: i + 1 for i, name in enumerate(names)}
        async with store.writer.begin() as conn:
            repos = [{"id": ids[r], "name": r, "created_at": 0.0} for r in names]
            await conn.execute(insert(t.repositories), repos)
            for table, rows in _rows(snap, ids):
                await conn.execute(insert(table), rows)
        del snap
        gc.collect()
        started = time.perf_counter()
        plan = await store.collect(
            CUTOFF, mark=None if in_sql else mark, dry_run=True, on_blob_deleted=_never
        )
        seconds = time.perf_counter() - started
        await database.close()
    return seconds, len(plan.manifests)


def main(argv: list[str]) -> None:
    if argv[:1] in (["--sqlite"], ["--sqlite-python"]):
        print(f"{'manifests':>10} {'collect s (wall)':>17}")
        for n in [int(a) for a in argv[1:]] or [10_000, 100_000]:
            seconds, dead = asyncio.run(measure_sqlite(n, in_sql=argv[0] == "--sqlite"))
            print(f"{n:>10} {seconds:>17.2f}  ({dead} dead)")
        return
    sizes = [int(a) for a in argv] or [10_000, 100_000, 1_000_000]
    print(f"{'manifests':>10} {'rows':>10} {'snapshot MiB':>13} {'mark cpu s':>11} {'peak MiB':>9}")
    for n in sizes:
        snap_mib, seconds, peak_mib, dead = measure(n)
        rows = 7 * n + n // 3 + n // 5  # manifests, 2 refs + 2 links + 2 blobs each, tags, children
        print(
            f"{n:>10} {rows:>10} {snap_mib:>13.1f} {seconds:>11.2f} {peak_mib:>9.1f}  ({dead} dead)"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
