"""Backend outages: clean 503s, automatic recovery, never a wrong or partial blob."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.images import make_image, push_blob, push_image, sha256
from tests.integration.server import ServerProcess, free_port
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


_FORM = {"grant_type": "password", "username": "nobody", "password": "pw", "service": "trustyard"}


def _requests(c: httpx.Client, token: str, gun: str) -> list[tuple[str, httpx.Response]]:
    """One trust, one token and one registry request, each reaching the database."""
    bearer = {"Authorization": f"Bearer {token}"}
    return [
        ("trust", c.get(f"/v2/{gun}/_trust/tuf/root.json", headers=bearer)),
        ("token", c.post("/auth/token", data=_FORM)),
        ("registry", c.get("/v2/pg/app/tags/list", headers=bearer)),
    ]


def _hammer(url: str, token: str, gun: str, stop: threading.Event) -> list[tuple[str, int]]:
    """`_requests` in a loop until `stop`; never a 500 (the stop and start transitions)."""
    seen: list[tuple[str, int]] = []
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            for route, r in _requests(c, token, gun):
                assert r.status_code != 500, f"{route}: {r.text}"
                assert r.status_code != 503 or r.headers["Retry-After"] == "5", r.headers
                seen.append((route, r.status_code))
    return seen


def test_postgres_fast_stop_and_start_up_answer_503_never_500(
    tmp_path: Path, own_postgres: Postgres
) -> None:
    """`pg_ctl stop -m fast` and the start after it: while PostgreSQL terminates sessions
    (57P01), refuses new ones while shutting down or starting up (57P03) and is gone
    (connection refused), trust, token and registry routes answer 503 + Retry-After."""
    url = own_postgres.url_for("outage")
    admin = subprocess.run(
        [sys.executable, "-m", "trustyard", "admin", "acl", "add", "anonymous", "pg/*", "pull"],
        env={**os.environ, "TRUSTYARD_DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    assert admin.returncode == 0, admin.stderr
    port = free_port()
    env = {
        "TRUSTYARD_DATABASE_URL": url,
        "TRUSTYARD_AUTH__MODE": "token",
        "TRUSTYARD_AUTH__BCRYPT_COST": "4",
        # Every failed login here is the test's own: no lockout (429) in the way.
        "TRUSTYARD_AUTH__MAX_FAILED_LOGINS": "1000000",
        "TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT": "1000000",
        "TRUSTYARD_TRUST__GUN_PREFIXES": f"127.0.0.1:{port}/",
    }
    server = ServerProcess(tmp_path / "data", port, env, ready_statuses=(401,)).start()
    try:
        gun = f"{server.host}/pg/app"
        scopes = [f"repository:{name}:pull" for name in ("pg/app", gun)]
        token = httpx.get(
            f"{server.url}/auth/token", params={"service": "trustyard", "scope": scopes}
        ).json()["token"]
        stop = threading.Event()
        with (
            concurrent.futures.ThreadPoolExecutor(3) as pool,
            httpx.Client(base_url=server.url, timeout=30) as c,
        ):
            loops = [pool.submit(_hammer, server.url, token, gun, stop) for _ in range(3)]
            time.sleep(1)
            own_postgres.pause()
            for route, r in _requests(c, token, gun):  # fully down
                assert r.status_code == 503, (route, r.text)
                assert r.headers["Retry-After"] == "5"
                assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
                assert "the metadata database is unavailable" in r.json()["errors"][0]["message"]
            own_postgres.resume()
            time.sleep(1)
            stop.set()
            seen = [answer for loop in loops for answer in loop.result()]
            assert {status for _, status in seen} <= {200, 401, 404, 503}, seen
            # Up again: every route answers from the database.
            assert [(route, r.status_code) for route, r in _requests(c, token, gun)] == [
                ("trust", 404),
                ("token", 401),
                ("registry", 404),
            ]
    finally:
        server.stop()
