"""Stateless replicas over PostgreSQL + S3 (moto) behind haproxy, driven by real clients."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import require
from tests.integration.images import (
    OCI_INDEX,
    make_image,
    make_index,
    push_blob,
    push_image,
    sha256,
    write_layout,
)
from tests.integration.server import ServerProcess
from tests.services.haproxy import Haproxy, start_haproxy
from tests.services.s3 import S3Server


def backend_env(
    postgres_url: str, s3_server: S3Server, bucket: str, *, redirect: bool
) -> dict[str, str]:
    return {"TRUSTYARD_DATABASE_URL": postgres_url, **s3_server.env(bucket, redirect=redirect)}


@pytest.fixture
def shared_env(postgres_url: str, s3_server: S3Server, s3_bucket: str) -> dict[str, str]:
    return backend_env(postgres_url, s3_server, s3_bucket, redirect=False)


@pytest.fixture
def replicas(
    tmp_path: Path, shared_env: dict[str, str]
) -> Iterator[tuple[Haproxy, list[ServerProcess]]]:
    servers = [
        ServerProcess(tmp_path / f"replica{i}", extra_env=shared_env).start() for i in range(2)
    ]
    proxy = start_haproxy(tmp_path, [s.port for s in servers])
    if proxy is None:
        for s in servers:
            s.stop()
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed; .ci/run must install it")
        pytest.skip("haproxy is not installed")
    yield proxy, servers
    proxy.stop()
    for s in servers:
        s.stop()


def _requests_seen(server: ServerProcess, needle: str) -> int:
    return sum(1 for line in server.log().splitlines() if needle in line)


def test_chunked_upload_hops_between_replicas(
    replicas: tuple[Haproxy, list[ServerProcess]],
) -> None:
    proxy, servers = replicas
    data = os.urandom(14 * 1024 * 1024)  # several 5 MiB S3 parts
    with httpx.Client(base_url=proxy.url, timeout=60) as c:
        location = c.post("/v2/hop/blobs/uploads/").headers["Location"]
        step = 3 * 1024 * 1024
        for start in range(0, len(data), step):
            chunk = data[start : start + step]
            r = c.patch(
                location,
                content=chunk,
                headers={"Content-Range": f"{start}-{start + len(chunk) - 1}"},
            )
            assert r.status_code == 202, r.text
        r = c.put(location, params={"digest": sha256(data)})
        assert r.status_code == 201, r.text
        got = c.get(f"/v2/hop/blobs/{sha256(data)}")
        assert got.status_code == 200 and sha256(got.content) == sha256(data)
        ranged = c.get(f"/v2/hop/blobs/{sha256(data)}", headers={"Range": "bytes=100-199"})
        assert ranged.status_code == 206 and ranged.content == data[100:200]
    upload_id = location.rsplit("/", 1)[1]
    # Both replicas took chunks of the same upload.
    assert all(_requests_seen(s, upload_id) > 0 for s in servers)


def test_skopeo_through_replicas(
    replicas: tuple[Haproxy, list[ServerProcess]], tmp_path: Path
) -> None:
    require("skopeo")
    proxy, _ = replicas
    images = {"v1": make_image(3, seed="scale", layer_size=200_000)}
    layout = write_layout(tmp_path / "src", images)
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout}:v1",
            f"docker://{proxy.host}/team/app:v1",
        ],
        check=True,
        capture_output=True,
    )
    out = tmp_path / "out"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            f"docker://{proxy.host}/team/app:v1",
            f"oci:{out}:v1",
        ],
        check=True,
        capture_output=True,
    )
    for blob in images["v1"].blobs:
        assert (out / "blobs" / "sha256" / sha256(blob)[7:]).read_bytes() == blob
    with httpx.Client(base_url=proxy.url) as c:
        assert c.get("/v2/_catalog").json()["repositories"] == ["team/app"]
        assert c.get("/v2/team/app/tags/list").json()["tags"] == ["v1"]


def test_index_referrers_and_gc_over_shared_backends(
    replicas: tuple[Haproxy, list[ServerProcess]], shared_env: dict[str, str], tmp_path: Path
) -> None:
    proxy, _servers = replicas
    amd, arm = make_image(seed="amd"), make_image(seed="arm", arch="arm64")
    dropped = make_image(seed="dropped")
    with httpx.Client(base_url=proxy.url, timeout=60) as c:
        push_image(c, "multi", amd)
        push_image(c, "multi", arm)
        push_image(c, "multi", dropped, "temp")
        index = make_index([(amd, "amd64"), (arm, "arm64")])
        assert (
            c.put(
                "/v2/multi/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX}
            ).status_code
            == 201
        )
        assert c.delete("/v2/multi/manifests/temp").status_code == 202
        stray = push_blob(c, "multi", os.urandom(1000))
    out = subprocess.run(
        [
            "python",
            "-m",
            "trustyard",
            "gc",
            "--grace-seconds",
            "0",
            "--data-dir",
            str(tmp_path / "gcdir"),
        ],
        env={**os.environ, **shared_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert f"deleted manifest multi@{dropped.digest}" in out.stdout
    assert f"deleted blob {stray}" in out.stdout
    with httpx.Client(base_url=proxy.url, timeout=60) as c:
        for img in (amd, arm):
            assert c.get(f"/v2/multi/manifests/{img.digest}").status_code == 200
            for blob in img.blobs:
                assert sha256(c.get(f"/v2/multi/blobs/{sha256(blob)}").content) == sha256(blob)
        assert c.get(f"/v2/multi/manifests/{dropped.digest}").status_code == 404
        assert c.get(f"/v2/multi/blobs/{stray}").status_code == 404


def test_blob_get_redirects_to_presigned_url(
    tmp_path: Path, postgres_url: str, s3_server: S3Server, s3_bucket: str
) -> None:
    server = ServerProcess(
        tmp_path / "data", extra_env=backend_env(postgres_url, s3_server, s3_bucket, redirect=True)
    ).start()
    try:
        with httpx.Client(base_url=server.url) as c:
            data = os.urandom(5000)
            digest = push_blob(c, "redir", data)
            r = c.get(f"/v2/redir/blobs/{digest}")
            assert r.status_code == 307
            assert r.headers["Location"].startswith(s3_server.endpoint)
            assert r.headers["Docker-Content-Digest"] == digest
            assert httpx.get(r.headers["Location"]).content == data
            head = c.head(f"/v2/redir/blobs/{digest}")
            assert head.status_code == 200 and head.headers["Content-Length"] == "5000"
    finally:
        server.stop()


def test_replica_killed_mid_push_client_retries(
    replicas: tuple[Haproxy, list[ServerProcess]], tmp_path: Path
) -> None:
    """A replica dies (SIGKILL) during a push; skopeo retries through haproxy and the image lands whole."""
    require("skopeo")
    import threading
    import time

    proxy, servers = replicas
    images = {"v1": make_image(4, seed="killed", layer_size=3_000_000)}
    layout = write_layout(tmp_path / "src", images)
    result: dict[str, subprocess.CompletedProcess[str]] = {}

    def push() -> None:
        result["push"] = subprocess.run(
            [
                "skopeo",
                "copy",
                "--retry-times",
                "5",
                "--dest-tls-verify=false",
                f"oci:{layout}:v1",
                f"docker://{proxy.host}/killed/app:v1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    thread = threading.Thread(target=push)
    thread.start()
    time.sleep(1.0)
    servers[0].kill()
    thread.join()
    if result["push"].returncode != 0:
        # skopeo retries some failures itself, not one in the middle of a chunked upload: haproxy
        # answers 502/503, or the connection to the dying replica is cut (EOF, reset, broken pipe)
        # depending on where the kill lands. The user then runs the same command again, which
        # haproxy sends to the live replica.
        signs = ("502", "503", "EOF", "connection reset", "broken pipe")
        stderr = result["push"].stderr
        assert any(s in stderr.lower() or s in stderr for s in signs), stderr
        push()
    assert result["push"].returncode == 0, result["push"].stderr
    out = tmp_path / "out"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            f"docker://{proxy.host}/killed/app:v1",
            f"oci:{out}:v1",
        ],
        check=True,
        capture_output=True,
    )
    for blob in images["v1"].blobs:
        assert (out / "blobs" / "sha256" / sha256(blob)[7:]).read_bytes() == blob
