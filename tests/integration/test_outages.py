"""Backend outages: clean 503s, automatic recovery, never a wrong or partial blob."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.images import make_image, push_blob, push_image, sha256
from tests.integration.server import ServerProcess
from tests.services.faulty import FaultyProxy
from tests.services.postgres import Postgres, start_postgres
from tests.services.s3 import S3Server


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A PostgreSQL of its own: this test stops and restarts it."""
    pg = start_postgres()
    assert pg is not None, "PostgreSQL is required"
    url = pg.create_database("outage")
    out = subprocess.run(
        [sys.executable, "-m", "trustyard", "db", "upgrade"],
        env={**os.environ, "TRUSTYARD_DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    yield pg
    pg.stop()


def test_postgres_restart_during_traffic(tmp_path: Path, own_postgres: Postgres) -> None:
    server = ServerProcess(
        tmp_path / "data", extra_env={"TRUSTYARD_DATABASE_URL": own_postgres.url_for("outage")}
    ).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            before = make_image(seed="before")
            push_image(c, "pg", before, "v1")
            own_postgres.pause()
            for r in (
                c.get("/v2/pg/tags/list"),
                c.post("/v2/pg/blobs/uploads/", params={"digest": sha256(b"x")}, content=b"x"),
            ):
                assert r.status_code == 503, r.text
                assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
                assert r.headers["Retry-After"] == "5"
                assert "Traceback" not in r.text
            head = c.head("/v2/pg/manifests/v1")
            assert head.status_code in (200, 503)  # may be answered from the lookup cache
            own_postgres.resume()
            assert c.get("/v2/pg/manifests/v1").content == before.manifest
            after = make_image(seed="after")
            push_image(c, "pg", after, "v2")
            assert c.get("/v2/pg/tags/list").json()["tags"] == ["v1", "v2"]
            for blob in [*before.blobs, *after.blobs]:
                assert sha256(c.get(f"/v2/pg/blobs/{sha256(blob)}").content) == sha256(blob)
            # The blob pushed during the outage was not recorded.
            assert c.head(f"/v2/pg/blobs/{sha256(b'x')}").status_code == 404
    finally:
        server.stop()


@pytest.fixture
def faulty_s3(s3_server: S3Server) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(s3_server.port)
    yield proxy
    proxy.stop()


def test_s3_errors_and_slowness_are_retried(
    tmp_path: Path, faulty_s3: FaultyProxy, s3_server: S3Server, s3_bucket: str
) -> None:
    env = {
        **s3_server.env(s3_bucket, redirect=False),
        "TRUSTYARD_S3__ENDPOINT_URL": faulty_s3.endpoint,
    }
    server = ServerProcess(tmp_path / "data", extra_env=env).start()
    try:
        faulty_s3.faults.fail_every = 3
        faulty_s3.faults.delay_every = 5
        faulty_s3.faults.delay = 0.5
        with httpx.Client(base_url=server.url, timeout=120) as c:
            images = [make_image(2, seed=f"s3-{i}", layer_size=100_000) for i in range(3)]
            for i, image in enumerate(images):
                push_image(c, "flaky", image, f"v{i}")
            data = os.urandom(12 * 1024 * 1024)
            location = c.post("/v2/flaky/blobs/uploads/").headers["Location"]
            for start in range(0, len(data), 4 * 1024 * 1024):
                chunk = data[start : start + 4 * 1024 * 1024]
                r = c.patch(
                    location,
                    content=chunk,
                    headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"},
                )
                assert r.status_code == 202, r.text
            assert c.put(location, params={"digest": sha256(data)}).status_code == 201
            assert faulty_s3.faults.injected > 5
            for image in images:
                for blob in image.blobs:
                    assert sha256(c.get(f"/v2/flaky/blobs/{sha256(blob)}").content) == sha256(blob)
            assert sha256(c.get(f"/v2/flaky/blobs/{sha256(data)}").content) == sha256(data)
    finally:
        server.stop()


def test_s3_down_is_a_clean_503(
    tmp_path: Path, faulty_s3: FaultyProxy, s3_server: S3Server, s3_bucket: str
) -> None:
    env = {
        **s3_server.env(s3_bucket, redirect=False),
        "TRUSTYARD_S3__ENDPOINT_URL": faulty_s3.endpoint,
    }
    server = ServerProcess(tmp_path / "data", extra_env=env).start()
    try:
        with httpx.Client(base_url=server.url, timeout=120) as c:
            kept = push_blob(c, "down", b"stored before the outage")
            faulty_s3.faults.down = True
            data = b"pushed during the outage"
            r = c.post("/v2/down/blobs/uploads/", params={"digest": sha256(data)}, content=data)
            assert r.status_code == 503, r.text
            assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
            assert "object storage" in r.json()["errors"][0]["message"]
            faulty_s3.faults.down = False
            assert c.head(f"/v2/down/blobs/{sha256(data)}").status_code == 404
            assert c.get(f"/v2/down/blobs/{kept}").content == b"stored before the outage"
            assert push_blob(c, "down", data) == sha256(data)
    finally:
        server.stop()
