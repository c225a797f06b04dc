"""Cached manifest lookups never serve an answer older than the last write, on any worker."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.images import OCI_MANIFEST, make_image, push_image
from tests.integration.server import ServerProcess


def _hammer(url: str, path: str, n: int = 12) -> set[str]:
    """GET on fresh connections, so requests spread over every worker."""
    seen = set()
    for _ in range(n):
        r = httpx.get(url + path, headers={"Accept": OCI_MANIFEST})
        seen.add(
            r.headers.get("Docker-Content-Digest") if r.status_code == 200 else str(r.status_code)
        )
    return seen


def _tag_moves_and_deletes_are_seen(url: str) -> None:
    one, two = make_image(seed="one"), make_image(seed="two")
    with httpx.Client(base_url=url) as c:
        push_image(c, "cached", one, "latest")
        push_image(c, "cached", two)
    assert _hammer(url, "/v2/cached/manifests/latest") == {one.digest}
    with httpx.Client(base_url=url) as c:
        r = c.put(
            "/v2/cached/manifests/latest",
            content=two.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201
    assert _hammer(url, "/v2/cached/manifests/latest") == {two.digest}
    assert _hammer(url, f"/v2/cached/manifests/{one.digest}") == {one.digest}
    assert httpx.delete(f"{url}/v2/cached/manifests/{one.digest}").status_code == 202
    assert _hammer(url, f"/v2/cached/manifests/{one.digest}") == {"404"}
    assert httpx.delete(f"{url}/v2/cached/manifests/latest").status_code == 202
    assert _hammer(url, "/v2/cached/manifests/latest") == {"404"}


def test_two_workers_one_machine(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", extra_args=["--workers", "2"]).start()
    try:
        _tag_moves_and_deletes_are_seen(server.url)
    finally:
        server.stop()


def test_replicas_share_stamps_through_redis(
    tmp_path: Path, redis_server, postgres_url: str
) -> None:
    # Two replicas over one database and one blob directory (as on a shared volume).
    env = {"TRUSTYARD_REDIS_URL": redis_server.url, "TRUSTYARD_DATABASE_URL": postgres_url}
    a = ServerProcess(tmp_path / "shared", extra_env=env).start()
    b = None
    try:
        b = ServerProcess(tmp_path / "shared", extra_env=env).start()
        one, two = make_image(seed="r1"), make_image(seed="r2")
        with httpx.Client(base_url=a.url) as ca:
            push_image(ca, "rep", one, "latest")
            push_image(ca, "rep", two)
        assert _hammer(b.url, "/v2/rep/manifests/latest", 3) == {one.digest}
        r = httpx.put(
            f"{a.url}/v2/rep/manifests/latest",
            content=two.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201
        assert _hammer(b.url, "/v2/rep/manifests/latest", 3) == {two.digest}
        # Redis goes away: both replicas keep answering, from the database.
        redis_server.stop()
        assert _hammer(b.url, "/v2/rep/manifests/latest", 3) == {two.digest}
        with httpx.Client(base_url=b.url) as cb:
            push_image(cb, "rep", make_image(seed="during-outage"), "new")
        assert httpx.get(f"{a.url}/v2/rep/tags/list").json()["tags"] == ["latest", "new"]
    finally:
        a.stop()
        if b is not None:
            b.stop()
