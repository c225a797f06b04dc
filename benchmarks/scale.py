"""Scale (trustyard alone, full mode only): how three costs grow with the size of a registry.

- GC: one dry-run `collect` on a SQLite store holding N synthetic manifests (benchmarks/gc_mark.py
  builds the rows): the pause pushes see, marking in SQL (metadata/gc_sql.py) as GC does.
- Start: `trustyard serve` until `/v2/` answers, on a data directory with N blob files on disk
  (nothing at start should walk them).
- Listings: the first and a middle page of `tags/list?n=100` on a repository with N tags,
  seeded straight into the database (the API would take hours at these sizes).

Each is measured at several sizes, so the growth can be read off (and extrapolated, with care,
to a million); no reference figures: the reference registry has no GC marking of this kind and
walks its storage for listings.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

from sqlalchemy import insert

from benchmarks.context import Context
from benchmarks.gc_mark import measure_sqlite
from benchmarks.listings import _latency
from benchmarks.servers import TRUSTYARD, TrustyardServer
from trustyard.metadata import schema as t
from trustyard.wiring import open_database

FAMILY = "Scale (trustyard alone; seconds or ms, lower is better)"
GC_SIZES = (10_000, 30_000, 100_000)
BLOB_SIZES = (0, 30_000, 100_000)
TAG_SIZES = (10_000, 100_000, 300_000)
MILLION = 1_000_000  # added by `--million`
PAGE = 100
SAMPLES = 40


def _hex(kind: str, i: int) -> str:
    return hashlib.sha256(f"{kind}{i}".encode()).hexdigest()


def _fill_blobs(storage: Path, n: int) -> None:
    """`n` small blob files in the filesystem backend's layout (blobs/sha256/xx/hex)."""
    root = storage / "blobs" / "sha256"
    for i in range(n):
        hexd = _hex("blob", i)
        folder = root / hexd[:2]
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / hexd, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, b"x")
        os.close(fd)


async def _seed_tags(database_path: Path, n: int) -> None:
    database = await open_database(database_path, create=True)
    try:
        digest = "sha256:" + _hex("manifest", 0)
        async with database.writer.begin() as conn:
            await conn.execute(
                insert(t.repositories), [{"id": 1, "name": "bench/tags", "created_at": 0.0}]
            )
            await conn.execute(
                insert(t.manifests),
                [
                    {
                        "repo_id": 1,
                        "digest": digest,
                        "media_type": "application/vnd.oci.image.manifest.v1+json",
                        "size": 2,
                        "content": b"{}",
                        "created_at": 0.0,
                    }
                ],
            )
            for start in range(0, n, 50_000):
                rows = [
                    {"repo_id": 1, "name": f"t{i:07d}", "digest": digest, "updated_at": 0.0}
                    for i in range(start, min(n, start + 50_000))
                ]
                await conn.execute(insert(t.tags), rows)
    finally:
        await database.close()


def _start_seconds(server: TrustyardServer) -> float:
    started = time.perf_counter()
    server.start()
    return time.perf_counter() - started - 0.3  # start() waits 0.3 s for the other workers


def _sizes(ctx: Context, sizes: tuple[int, ...]) -> tuple[int, ...]:
    return (*sizes, MILLION) if ctx.mode.scale_million else sizes


def run(ctx: Context) -> None:
    for n in _sizes(ctx, GC_SIZES):
        seconds, dead = asyncio.run(measure_sqlite(n))
        w = ctx.results.workload(
            f"scale_gc_{n}", FAMILY, f"GC dry-run collect, {n:,} manifests", "s", False
        )
        w.add(TRUSTYARD, seconds, dead=dead, manifests=n)
        ctx.say(f"GC collect over {n:,} manifests: {seconds:.2f} s")
    for n in _sizes(ctx, BLOB_SIZES):
        server = TrustyardServer(f"{TRUSTYARD}-start-{n}", ctx.workdir / f"scale-start-{n}", 1)
        _fill_blobs(server.data_dir / "storage", n)
        w = ctx.results.workload(
            f"scale_start_{n}", FAMILY, f"serve until /v2/ answers, {n:,} blobs on disk", "s", False
        )
        for _ in range(ctx.mode.repeats):
            w.add(TRUSTYARD, _start_seconds(server), blobs=n)
            server.stop()
        ctx.say(f"start with {n:,} blobs done")
    for n in _sizes(ctx, TAG_SIZES):
        server = TrustyardServer(f"{TRUSTYARD}-tags-{n}", ctx.workdir / f"scale-tags-{n}", 1)
        server.data_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(_seed_tags(server.data_dir / "metadata.db", n))
        server.start()
        try:
            with server.connect() as conn:
                for label, query in (
                    ("first page", f"n={PAGE}"),
                    ("middle page", f"n={PAGE}&last=t{n // 2:07d}"),
                ):
                    median, p99, low, count = _latency(
                        conn, f"/v2/bench/tags/tags/list?{query}", SAMPLES
                    )
                    w = ctx.results.workload(
                        f"scale_tags_{label.replace(' ', '_')}_{n}",
                        FAMILY,
                        f"tags {label} (n={PAGE}), {n:,} tags",
                        "ms",
                        False,
                    )
                    w.add(TRUSTYARD, median, p50_ms=median, p99_ms=p99, min_ms=low, items=count)
        finally:
            server.stop()
        ctx.say(f"listings with {n:,} tags done")
