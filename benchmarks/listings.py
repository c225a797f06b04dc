"""Tags list on a repository with many tags and the catalog with many repositories.

Both are grown through the HTTP API (16 concurrent connections, the same requests for both
servers): tags by PUTting one manifest under many tags, repositories by mounting one config
blob and PUTting a layer-less manifest. Page latency is measured at every size in
`Mode.list_sizes`, so "constant time whatever the size" can be checked: first page and a page
from the middle with n=100, and the whole list in one response.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from benchmarks.api import OCI_CONFIG, OCI_MANIFEST, descriptor, mount_blob, push_blob, put_manifest
from benchmarks.context import Context
from benchmarks.http1 import Connection, expect
from benchmarks.servers import Server
from benchmarks.stats import percentile

FAMILY = "Listings (page latency in ms, lower is better)"
TAG_REPO = "bench/tags"
CATALOG_PREFIX = "bench-catalog/r"
SOURCE_REPO = "bench/catalog-source"
PAGE = 100
PARALLEL = 16


def _config() -> bytes:
    return json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()


def _manifest(config: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [],
        }
    ).encode()


def _parallel(server: Server, items: Iterable[str], fn: Callable[[Connection, str], None]) -> None:
    local = threading.local()
    conns: list[Connection] = []

    def work(item: str) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = server.connect()
            conns.append(conn)
        fn(conn, item)

    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            for _ in pool.map(work, items):
                pass
    finally:
        for c in conns:
            c.close()


def _latency(conn: Connection, path: str, samples: int) -> tuple[float, float, float, int]:
    """(median, p99, min) in ms over `samples` sequential GETs, and the items in the answer."""
    times = []
    count = 0
    for _ in range(samples):
        started = time.perf_counter()
        resp = expect(conn.request("GET", path), 200)
        times.append((time.perf_counter() - started) * 1000)
        body = json.loads(resp.body)
        count = len(body.get("tags") or body.get("repositories") or [])
    times.sort()
    return times[len(times) // 2], percentile(times, 99), times[0], count


def run(ctx: Context) -> None:
    config = _config()
    manifest = _manifest(config)
    for _name, server in ctx.each():
        with server.connect() as conn:
            push_blob(conn, TAG_REPO, config)
            push_blob(conn, SOURCE_REPO, config)
            put_manifest(conn, SOURCE_REPO, "latest", manifest)
    config_digest = str(descriptor(OCI_CONFIG, config)["digest"])

    def add_tag(conn: Connection, tag: str) -> None:
        put_manifest(conn, TAG_REPO, tag, manifest)

    def add_repo(conn: Connection, repo: str) -> None:
        mount_blob(conn, repo, config_digest, SOURCE_REPO)
        put_manifest(conn, repo, "latest", manifest)

    have = 0
    for size in ctx.mode.list_sizes:
        for name, server in ctx.each():
            started = time.perf_counter()
            _parallel(server, (f"t{i:06d}" for i in range(have, size)), add_tag)
            _parallel(server, (f"{CATALOG_PREFIX}{i:06d}" for i in range(have, size)), add_repo)
            created = ctx.results.workload(
                f"create_{size}",
                FAMILY,
                f"setup: +{size - have} tags and repos (16 conns)",
                "s",
                higher_is_better=False,
            )
            created.add(name, time.perf_counter() - started)
            middle = f"t{size // 2:06d}"
            middle_repo = f"{CATALOG_PREFIX}{size // 2:06d}"
            pages = [
                ("tags", "first page", f"/v2/{TAG_REPO}/tags/list?n={PAGE}"),
                ("tags", "middle page", f"/v2/{TAG_REPO}/tags/list?n={PAGE}&last={middle}"),
                ("tags", "whole list", f"/v2/{TAG_REPO}/tags/list"),
                ("catalog", "first page", f"/v2/_catalog?n={PAGE}"),
                ("catalog", "middle page", f"/v2/_catalog?n={PAGE}&last={middle_repo}"),
                ("catalog", "whole list", "/v2/_catalog?n=10000"),
            ]
            with server.connect() as conn:
                for kind, label, path in pages:
                    what = "tags" if kind == "tags" else "repos"
                    w = ctx.results.workload(
                        f"{kind}_{label.replace(' ', '_')}_{size}",
                        FAMILY,
                        f"{kind} {label}{_n(kind, label)}, {size:,} {what}",
                        "ms",
                        higher_is_better=False,
                    )
                    median, p99, low, count = _latency(conn, path, ctx.mode.list_samples)
                    w.add(name, median, p50_ms=median, p99_ms=p99, min_ms=low, items=count)
            ctx.say(f"listings with {size:,} tags/repos on {name} done")
        have = size


def _n(kind: str, label: str) -> str:
    if "page" in label:
        return f" (n={PAGE})"
    return " (n=10000)" if kind == "catalog" else ""
