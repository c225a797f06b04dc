"""Blob push (monolithic and chunked), blob pull, and the server's memory while streaming.

The client sends with sendfile from a page-cached file and discards what it receives, so it
costs little CPU; every push carries fresh bytes (a new 16-byte prefix), so no server can skip
work for a blob it already has.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from benchmarks.context import Context
from benchmarks.http1 import Connection, expect
from benchmarks.servers import REFERENCE, TRUSTYARD, RssSampler, TrustyardServer
from benchmarks.stats import Workload

FAMILY = "Blobs (MB/s, higher is better)"
MEMORY = "Memory (peak PSS summed over the server's process tree, MiB, lower is better)"


class BlobFile:
    """A file of random bytes whose first 16 bytes change before every push."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        block = os.urandom(4 << 20)
        with path.open("wb") as f:
            left = size
            while left > 0:
                left -= f.write(block[: min(len(block), left)])
        self.fd = os.open(path, os.O_RDWR)
        self.digest = ""

    def renew(self) -> str:
        os.pwrite(self.fd, os.urandom(16), 0)
        h = hashlib.sha256()
        buf = bytearray(4 << 20)
        offset = 0
        while n := os.preadv(self.fd, [buf], offset):
            h.update(memoryview(buf)[:n])
            offset += n
        self.digest = "sha256:" + h.hexdigest()
        return self.digest

    def close(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def _put_url(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def push_monolithic(conn: Connection, repo: str, blob: BlobFile) -> float:
    started = time.perf_counter()
    location = expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/"), 202).location()
    expect(
        conn.request(
            "PUT",
            _put_url(location, blob.digest),
            {"Content-Type": "application/octet-stream"},
            body_file=blob.fd,
            count=blob.size,
        ),
        201,
    )
    return time.perf_counter() - started


def push_chunked(conn: Connection, repo: str, blob: BlobFile, chunk: int) -> float:
    started = time.perf_counter()
    location = expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/"), 202).location()
    offset = 0
    while offset < blob.size:
        n = min(chunk, blob.size - offset)
        resp = conn.request(
            "PATCH",
            location,
            {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + n - 1}",
            },
            body_file=blob.fd,
            offset=offset,
            count=n,
        )
        location = expect(resp, 202).location()
        offset += n
    expect(conn.request("PUT", _put_url(location, blob.digest)), 201)
    return time.perf_counter() - started


def pull(conn: Connection, repo: str, digest: str, size: int) -> float:
    started = time.perf_counter()
    resp = expect(conn.request("GET", f"/v2/{repo}/blobs/{digest}", keep_body=False), 200)
    elapsed = time.perf_counter() - started
    if resp.received != size:
        raise RuntimeError(f"pulled {resp.received} bytes, expected {size}")
    return elapsed


def run(ctx: Context) -> None:
    mode = ctx.mode
    blob = BlobFile(ctx.workdir / "blob.bin", mode.blob_bytes)
    size_label = _size(mode.blob_bytes)
    mono = ctx.results.workload(
        "blob_push_monolithic", FAMILY, f"push {size_label}, monolithic", "MB/s"
    )
    chunked = ctx.results.workload(
        "blob_push_chunked", FAMILY, f"push {size_label}, {_size(mode.chunk_bytes)} chunks", "MB/s"
    )
    first = ctx.results.workload(
        "blob_pull_first", FAMILY, f"pull {size_label}, first pull after its push", "MB/s"
    )
    pulled = ctx.results.workload("blob_pull", FAMILY, f"pull {size_label}, page-cached", "MB/s")
    last: dict[str, str] = {}
    conns = {name: server.connect() for name, server in ctx.each()}
    try:
        for rep in range(mode.repeats):
            for name, _server in ctx.each():
                # Which push came second mattered here (before direct I/O the later one ran
                # slower; the cause was guest-memory faults, docs/benchmarks.md): alternate the
                # order per repetition so neither kind always takes the second place.
                kinds = ("monolithic", "chunked") if rep % 2 == 0 else ("chunked", "monolithic")
                for kind in kinds:
                    blob.renew()
                    if kind == "monolithic":
                        seconds = push_monolithic(conns[name], "bench/blobs", blob)
                        mono.add(name, blob.size / seconds / 1e6)
                    else:
                        seconds = push_chunked(conns[name], "bench/blobs", blob, mode.chunk_bytes)
                        chunked.add(name, blob.size / seconds / 1e6)
                    last[name] = blob.digest
            ctx.say(f"blob push rep {rep + 1}/{mode.repeats} done")
        # trustyard writes uploads around the page cache (storage/appender.py), the reference
        # through it: right after the push only the reference has the blob cached. That first
        # pull is its own row; the pulls after it serve a cached blob on both sides.
        for name, _server in ctx.each():
            seconds = pull(conns[name], "bench/blobs", last[name], blob.size)
            first.add(name, blob.size / seconds / 1e6)
        for _rep in range(mode.repeats):
            for name, _server in ctx.each():
                seconds = pull(conns[name], "bench/blobs", last[name], blob.size)
                pulled.add(name, blob.size / seconds / 1e6)
    finally:
        for c in conns.values():
            c.close()
        blob.close()
    stream(ctx)


def stream(ctx: Context) -> None:
    """Peak memory while one large blob streams in, then out (one repetition: it is long).

    Measured on the benchmark's trustyard (2 workers, after the traffic above) and on a fresh
    trustyard with 1 worker, which shows what one more worker costs.
    """
    size = ctx.mode.stream_bytes
    blob = BlobFile(ctx.workdir / "stream.bin", size)
    blob.renew()
    rows = {}
    for suffix, label in (("", ""), ("_workers1", ", trustyard 1 worker")):
        rows[suffix] = (
            ctx.results.workload(
                f"rss_stream_push{suffix}",
                MEMORY,
                f"during a {_size(size)} push{label}",
                "MiB",
                higher_is_better=False,
            ),
            ctx.results.workload(
                f"rss_stream_pull{suffix}",
                MEMORY,
                f"during a {_size(size)} pull{label}",
                "MiB",
                higher_is_better=False,
            ),
        )
    single = TrustyardServer(f"{TRUSTYARD}-1w", ctx.workdir / "trustyard-1w", workers=1)
    try:
        single.start()
        measured = [(name, server, "") for name, server in ctx.each()]
        measured.append((TRUSTYARD, single, "_workers1"))
        for name, server, suffix in measured:
            push_rss, pull_rss = rows[suffix]
            with server.connect() as conn:
                with server.rss() as sampler:
                    push_monolithic(conn, "bench/stream", blob)
                add_memory(push_rss, name, sampler)
                with server.rss() as sampler:
                    pull(conn, "bench/stream", blob.digest, size)
                add_memory(pull_rss, name, sampler)
            ctx.say(f"{_size(size)} stream through {server.name} done")
        # the reference's figures beside the 1-worker rows, for the ratio
        for mine, theirs in zip(rows["_workers1"], rows[""], strict=True):
            for value in theirs.samples.get(REFERENCE, []):
                mine.add(REFERENCE, value)
    finally:
        single.stop()
        blob.close()


def add_memory(workload: Workload, name: str, sampler: RssSampler) -> None:
    """One peak-memory sample: the tree's PSS, with its RSS sum, largest process and idle base."""
    workload.add(
        name,
        sampler.peak.tree_pss_mib,
        tree_rss_mib=sampler.peak.tree_rss_mib,
        largest_process_mib=sampler.peak.largest_mib,
        baseline_mib=sampler.peak.baseline_mib,
    )


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} B"
