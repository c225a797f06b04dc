"""The scaled-out topology: 1, 2 and 3 trustyard replicas over PostgreSQL + S3 + Redis.

Starts the test suite's services (tests/services: PostgreSQL via initdb, moto_server, Redis,
haproxy), then one topology at a time: N trustyard replicas (one Granian worker each, the
default) behind haproxy (round robin per request), and the reference `docker-registry` with its
S3 driver on another bucket of the same moto server, behind its own haproxy (one backend) so both
pay the same proxy hop. S3 redirects are off on both: blob bodies stream through the servers.

Per topology, interleaved with the reference: blob push (monolithic) and pull in MB/s, and
manifest GET by tag at 32 clients (wrk). Then, trustyard over PostgreSQL only: tags-list and
catalog pages at 1k vs 100k tags and 1k vs 10k repositories. The rows are inserted straight into
PostgreSQL with COPY (asyncpg), not through 100k API calls.

moto keeps objects in Python and hashes/copies every part: it, not the registries, bounds the
blob figures (sizes: 8 MiB quick, 256 MiB full).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.api import OCI_CONFIG, OCI_MANIFEST, descriptor, push_blob, put_manifest
from benchmarks.blobs import BlobFile, _size, pull, push_monolithic
from benchmarks.context import Context, MiB
from benchmarks.http1 import Connection
from benchmarks.listings import _latency
from benchmarks.manifests import REPO, TAG, setup, wrk
from benchmarks.servers import REFERENCE, TRUSTYARD, free_port

FAMILY = "Replicas over PostgreSQL + S3 (moto) + Redis, behind haproxy"
LISTINGS = "Replicas: listings over PostgreSQL (trustyard only; page latency in ms)"
REPLICAS = (1, 2, 3)
QUICK_BLOB = 8 * MiB
FULL_BLOB = 256 * MiB
PART_SIZE = 10 * MiB  # the reference's default S3 chunk size; trustyard's set to match
TAG_SIZES = (1_000, 100_000)
REPO_SIZES = (1_000, 10_000)
TAG_REPO = "bench/tags"
CATALOG_PREFIX = "bench-catalog/r"
PAGE = 100

REFERENCE_S3_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    region: us-east-1
    regionendpoint: {endpoint}
    bucket: {bucket}
    accesskey: {access_key}
    secretkey: {secret_key}
    secure: false
    v4auth: true
    chunksize: {chunk}
  redirect:
    disable: true
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
catalog:
  maxentries: 10000
"""


@dataclass
class Endpoint:
    """Something answering the registry API on a loopback port (a haproxy frontend)."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connect(self) -> Connection:
        return Connection("127.0.0.1", self.port)


class Services:
    """PostgreSQL, moto and Redis from tests/services, shared by every topology."""

    def __init__(self, root: Path) -> None:
        from tests.services.postgres import start_postgres
        from tests.services.redis import start_redis
        from tests.services.s3 import start_s3

        self.root = root
        self.pg = self.s3 = self.redis = None
        self.pg = start_postgres()
        self.s3 = start_s3()
        self.redis = start_redis(root)
        if self.pg is None or self.s3 is None or self.redis is None:
            self.stop()
            raise RuntimeError("PostgreSQL (initdb), moto_server and redis-server are required")
        self.db_url = self.pg.create_database("bench" + uuid.uuid4().hex[:8])
        upgrade = subprocess.run(
            [sys.executable, "-m", "trustyard", "db", "upgrade"],
            env={**os.environ, "TRUSTYARD_DATABASE_URL": self.db_url},
            capture_output=True,
            text=True,
            timeout=120,
        )
        if upgrade.returncode != 0:
            self.stop()
            raise RuntimeError(f"trustyard db upgrade failed: {upgrade.stderr[-2000:]}")
        self.env = {
            "TRUSTYARD_DATABASE_URL": self.db_url,
            "TRUSTYARD_REDIS_URL": self.redis.url,
            **self.s3.env(self.s3.create_bucket(), redirect=False),
            "TRUSTYARD_S3__PART_SIZE": str(PART_SIZE),
        }
        self.ref_bucket = self.s3.create_bucket()

    def stop(self) -> None:
        for service in (self.redis, self.s3, self.pg):
            if service is not None:
                service.stop()


@contextmanager
def trustyard_topology(services: Services, replicas: int) -> Iterator[Endpoint]:
    from tests.integration.server import ServerProcess
    from tests.services.haproxy import start_haproxy

    root = services.root / f"replicas{replicas}"
    root.mkdir(parents=True, exist_ok=True)
    procs: list[ServerProcess] = []
    proxy = None
    try:
        for i in range(replicas):
            procs.append(
                ServerProcess(
                    root / f"replica{i}",
                    extra_env=services.env,
                    extra_args=["--log-level", "warning"],
                ).start()
            )
        proxy = start_haproxy(root, [p.port for p in procs])
        if proxy is None:
            raise RuntimeError("haproxy is required")
        time.sleep(1.0)  # every backend's health check has passed
        yield Endpoint(proxy.port)
    finally:
        if proxy is not None:
            proxy.stop()
        for p in procs:
            p.stop()


@contextmanager
def reference_s3(services: Services) -> Iterator[Endpoint]:
    from tests.services.haproxy import start_haproxy
    from tests.services.s3 import ACCESS_KEY, SECRET_KEY

    assert services.s3 is not None
    root = services.root / "reference-s3"
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        REFERENCE_S3_CONFIG.format(
            endpoint=services.s3.endpoint,
            bucket=services.ref_bucket,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            chunk=PART_SIZE,
            port=port,
        )
    )
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    # AWS_* (e.g. AWS_CA_BUNDLE) would make the Go SDK panic with a plain-HTTP endpoint
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "AWS_"))}
    log = (root / "server.log").open("ab")
    proc = subprocess.Popen(
        [binary, "serve", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    proxy = None
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry (S3) exited: {(root / 'server.log').read_text()}"
                )
            try:
                with Connection("127.0.0.1", port) as c:
                    if c.request("GET", "/v2/").status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry (S3) did not answer in 30 s")
            time.sleep(0.1)
        proxy = start_haproxy(root, [port], check_path="/v2/")  # no /readyz there
        if proxy is None:
            raise RuntimeError("haproxy is required")
        time.sleep(1.0)
        yield Endpoint(proxy.port)
    finally:
        if proxy is not None:
            proxy.stop()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _plural(n: int) -> str:
    return f"{n} replica{'s' if n > 1 else ''}"


def measure_topology(
    ctx: Context, replicas: int, ty: Endpoint, ref: Endpoint, blob: BlobFile
) -> None:
    mode = ctx.mode
    size = _size(blob.size)
    targets = [(TRUSTYARD, ty), (REFERENCE, ref)]
    push = ctx.results.workload(
        f"replicas_push_r{replicas}", FAMILY, f"push {size}, trustyard {_plural(replicas)}", "MB/s"
    )
    pulled = ctx.results.workload(
        f"replicas_pull_r{replicas}", FAMILY, f"pull {size}, trustyard {_plural(replicas)}", "MB/s"
    )
    get = ctx.results.workload(
        f"replicas_manifest_get_r{replicas}",
        FAMILY,
        f"manifest GET by tag, 32 clients, {_plural(replicas)}",
        "req/s",
    )
    repo = "bench/replicas-blobs"
    for _rep in range(mode.repeats):
        for name, endpoint in targets:
            with endpoint.connect() as conn:
                blob.renew()
                push.add(name, blob.size / push_monolithic(conn, repo, blob) / 1e6)
            with endpoint.connect() as conn:
                pulled.add(name, blob.size / pull(conn, repo, blob.digest, blob.size) / 1e6)
    ctx.say(f"{_plural(replicas)}: blob push/pull done")
    for _name, endpoint in targets:
        setup(endpoint)  # type: ignore[arg-type]  # only .connect() is used
    for _rep in range(mode.wrk_repeats):
        for name, endpoint in targets:
            r = wrk(
                f"{endpoint.url}/v2/{REPO}/manifests/{TAG}",
                "GET",
                32,
                mode.wrk_seconds,
                ctx.workdir,
            )
            get.add_load(name, r)
    ctx.say(f"{_plural(replicas)}: manifest GET done")


# -- listings at scale: rows bulk-inserted into PostgreSQL ------------------------------------


def _listing_manifest() -> tuple[bytes, bytes]:
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [],
        }
    ).encode()
    return config, manifest


async def _bulk_insert(db_url: str, tags: range, repos: range) -> None:
    """Tags t<i> in TAG_REPO, repositories CATALOG_PREFIX<i> each with one manifest + tag."""
    import asyncpg

    conn = await asyncpg.connect(db_url)
    try:
        now = time.time()
        repo_id, digest = await conn.fetchrow(
            "SELECT r.id, t.digest FROM repositories r JOIN tags t ON t.repo_id = r.id "
            "WHERE r.name = $1 AND t.name = 'latest'",
            TAG_REPO,
        )
        await conn.copy_records_to_table(
            "tags",
            records=((repo_id, f"t{i:06d}", digest, now) for i in tags),
            columns=["repo_id", "name", "digest", "updated_at"],
        )
        await conn.copy_records_to_table(
            "repositories",
            records=((f"{CATALOG_PREFIX}{i:06d}", now) for i in repos),
            columns=["name", "created_at"],
        )
        names = [f"{CATALOG_PREFIX}{i:06d}" for i in repos]
        # each new repository gets the source's manifest (and its config link) and one tag
        await conn.execute(
            "INSERT INTO manifests (repo_id, digest, media_type, size, content, subject, "
            "artifact_type, annotations, created_at) "
            "SELECT r.id, m.digest, m.media_type, m.size, m.content, m.subject, m.artifact_type, "
            "m.annotations, m.created_at FROM repositories r, manifests m "
            "WHERE r.name = ANY($1::text[]) AND m.repo_id = $2 AND m.digest = $3",
            names,
            repo_id,
            digest,
        )
        await conn.execute(
            "INSERT INTO repo_blobs (repo_id, digest, linked_at) "
            "SELECT r.id, b.digest, b.linked_at FROM repositories r, repo_blobs b "
            "WHERE r.name = ANY($1::text[]) AND b.repo_id = $2",
            names,
            repo_id,
        )
        await conn.execute(
            "INSERT INTO tags (repo_id, name, digest, updated_at) "
            "SELECT r.id, 'latest', $2, $3 FROM repositories r WHERE r.name = ANY($1::text[])",
            names,
            digest,
            now,
        )
        # what autovacuum would do shortly after a load like this
        await conn.execute("ANALYZE repositories; ANALYZE tags; ANALYZE manifests")
    finally:
        await conn.close()


def listings(ctx: Context, services: Services, ty: Endpoint) -> None:
    config, manifest = _listing_manifest()
    with ty.connect() as conn:
        push_blob(conn, TAG_REPO, config)
        put_manifest(conn, TAG_REPO, "latest", manifest)
    samples = ctx.mode.list_samples
    have_tags = have_repos = 0
    tag_sizes, repo_sizes = TAG_SIZES, REPO_SIZES
    if ctx.mode.scale_million:  # `--million`: tag pages at 1,000,000 on PostgreSQL too
        tag_sizes, repo_sizes = (*TAG_SIZES, 1_000_000), (*REPO_SIZES, 100_000)
    for n_tags, n_repos in zip(tag_sizes, repo_sizes, strict=True):
        started = time.perf_counter()
        asyncio.run(
            _bulk_insert(services.db_url, range(have_tags, n_tags), range(have_repos, n_repos))
        )
        seconds = time.perf_counter() - started
        ctx.results.notes.append(
            f"replicas listings: {n_tags - have_tags:,} tags + {n_repos - have_repos:,} "
            f"repositories COPY-inserted into PostgreSQL in {seconds:.1f} s"
        )
        have_tags, have_repos = n_tags, n_repos
        pages = [
            ("tags", "first page", n_tags, f"/v2/{TAG_REPO}/tags/list?n={PAGE}"),
            (
                "tags",
                "middle page",
                n_tags,
                f"/v2/{TAG_REPO}/tags/list?n={PAGE}&last=t{n_tags // 2:06d}",
            ),
            ("catalog", "first page", n_repos, f"/v2/_catalog?n={PAGE}"),
            (
                "catalog",
                "middle page",
                n_repos,
                f"/v2/_catalog?n={PAGE}&last={CATALOG_PREFIX}{n_repos // 2:06d}",
            ),
        ]
        with ty.connect() as conn:
            for kind, label, n, path in pages:
                what = "tags" if kind == "tags" else "repos"
                w = ctx.results.workload(
                    f"replicas_{kind}_{label.replace(' ', '_')}_{n}",
                    LISTINGS,
                    f"{kind} {label} (n={PAGE}), {n:,} {what}",
                    "ms",
                    higher_is_better=False,
                )
                median, p99, low, count = _latency(conn, path, samples)
                if count != PAGE:
                    raise RuntimeError(f"{path}: {count} items, expected {PAGE}")
                w.add(TRUSTYARD, median, p50_ms=median, p99_ms=p99, min_ms=low, items=count)
        ctx.say(f"listings at {n_tags:,} tags / {n_repos:,} repositories done")


def missing_services() -> list[str]:
    """What this family needs beyond the suite's tools (Debian packages, moto from PyPI)."""
    from tests.services.postgres import _bindir

    missing = [] if _bindir() is not None else ["postgresql (initdb)"]
    if shutil.which("haproxy") is None and not Path("/usr/sbin/haproxy").exists():
        missing.append("haproxy")
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        missing.append("redis-server")
    try:
        import asyncpg  # noqa: F401
        import moto  # noqa: F401
    except ImportError as exc:
        missing.append(str(exc.name))
    return missing


def run(ctx: Context) -> None:
    missing = missing_services()
    if missing:
        ctx.results.notes.append(f"replicas: skipped, not installed: {', '.join(missing)}")
        ctx.say(f"skipped: {', '.join(missing)} not installed")
        return
    root = ctx.workdir / "replicas"
    root.mkdir(parents=True, exist_ok=True)
    blob_bytes = QUICK_BLOB if ctx.mode.name == "quick" else FULL_BLOB
    services = Services(root)
    blob = BlobFile(ctx.workdir / "replicas-blob.bin", blob_bytes)
    try:
        ctx.say("PostgreSQL, moto S3 and Redis started")
        with reference_s3(services) as ref:
            for n in REPLICAS:
                with trustyard_topology(services, n) as ty:
                    measure_topology(ctx, n, ty, ref, blob)
                    if n == REPLICAS[-1]:
                        listings(ctx, services, ty)
        ctx.results.notes.append(
            f"replicas: blobs through moto_server (S3 in Python) — moto bounds these MB/s; "
            f"{_size(blob_bytes)} blobs, S3 redirect off on both, part/chunk size "
            f"{_size(PART_SIZE)}; each replica runs 1 Granian worker; the reference is one "
            "docker-registry (S3 driver) behind its own haproxy"
        )
    finally:
        blob.close()
        services.stop()
