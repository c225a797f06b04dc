"""`trustyard gc`: online, safe for in-flight pushes and multi-arch images, expires uploads."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.integration.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    make_index,
    push_blob,
    push_image,
    sha256,
)
from tests.integration.server import ServerProcess


def gc(server: ServerProcess, *args: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trustyard",
            "gc",
            "--data-dir",
            str(server.data_dir),
            "--log-level",
            "warning",
            *args,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _blob_files(server: ServerProcess) -> set[str]:
    root = server.data_dir / "storage" / "blobs"
    return {f"sha256:{p.name}" for p in root.rglob("*") if p.is_file()}


def _age_everything(server: ServerProcess, seconds: float = 7200) -> None:
    """Make all stored items look old, instead of waiting out the grace period."""
    import sqlite3

    db = sqlite3.connect(server.data_dir / "metadata.db")
    then = time.time() - seconds
    with db:
        db.execute("UPDATE manifests SET created_at=?", (then,))
        db.execute("UPDATE repo_blobs SET linked_at=?", (then,))
        db.execute("UPDATE blobs SET last_seen=?, created_at=?", (then, then))
        db.execute("UPDATE uploads SET started_at=?", (then,))
    db.close()
    for p in (server.data_dir / "storage").rglob("*"):
        if p.is_file():
            os.utime(p, (then, then))


def test_gc_dry_run_then_collect(client: httpx.Client, server: ServerProcess) -> None:
    kept = make_image(seed="kept")
    dropped = make_image(seed="dropped")
    push_image(client, "app", kept, "v1")
    push_image(client, "app", dropped, "v2")
    assert client.delete("/v2/app/manifests/v2").status_code == 202  # untag: manifest now garbage
    stray = push_blob(client, "app", os.urandom(3000))  # never referenced
    _age_everything(server)

    before = _blob_files(server)
    out = gc(server, "--dry-run")
    assert f"would delete manifest app@{dropped.digest}" in out
    assert f"would delete blob {stray}" in out
    for blob in dropped.blobs:
        assert f"would delete blob {sha256(blob)}" in out
    assert "dry run:" in out and "would free" in out
    assert _blob_files(server) == before  # nothing changed
    assert client.get(f"/v2/app/manifests/{dropped.digest}").status_code == 200

    out = gc(server)
    assert "freed" in out
    assert client.get(f"/v2/app/manifests/{dropped.digest}").status_code == 404
    assert client.get(f"/v2/app/blobs/{stray}").status_code == 404
    remaining = _blob_files(server)
    assert remaining == {sha256(b) for b in kept.blobs}
    # The kept image is fully intact, every digest verifying.
    assert client.get("/v2/app/manifests/v1").content == kept.manifest
    for blob in kept.blobs:
        assert sha256(client.get(f"/v2/app/blobs/{sha256(blob)}").content) == sha256(blob)


def test_gc_keeps_children_of_tagged_index_and_referrers(
    client: httpx.Client, server: ServerProcess
) -> None:
    amd, arm = make_image(seed="amd"), make_image(seed="arm", arch="arm64")
    push_image(client, "multi", amd)
    push_image(client, "multi", arm)
    index = make_index([(amd, "amd64"), (arm, "arm64")])
    assert (
        client.put(
            "/v2/multi/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX}
        ).status_code
        == 201
    )
    sig = make_image(
        1,
        seed="sig",
        extra={
            "artifactType": "application/x-sig",
            "subject": {"mediaType": OCI_INDEX, "digest": sha256(index), "size": len(index)},
        },
    )
    push_image(client, "multi", sig)
    _age_everything(server)
    gc(server)
    for img in (amd, arm, sig):
        assert client.get(f"/v2/multi/manifests/{img.digest}").status_code == 200
        for blob in img.blobs:
            assert client.head(f"/v2/multi/blobs/{sha256(blob)}").status_code == 200
    assert [
        m["digest"] for m in client.get(f"/v2/multi/referrers/{sha256(index)}").json()["manifests"]
    ] == [sig.digest]
    # Untag the index: now index, children and referrer all go.
    client.delete("/v2/multi/manifests/latest")
    _age_everything(server)
    gc(server)
    for digest in (sha256(index), amd.digest, arm.digest, sig.digest):
        assert client.get(f"/v2/multi/manifests/{digest}").status_code == 404
    assert _blob_files(server) == set()


def test_grace_period_protects_fresh_uploads(client: httpx.Client, server: ServerProcess) -> None:
    image = make_image(seed="inflight")
    for blob in image.blobs:  # uploaded, manifest not pushed yet
        push_blob(client, "slow", blob)
    out = gc(server)  # default grace period: one hour
    assert "0 blobs" in out
    r = client.put(
        "/v2/slow/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201


def test_gc_while_pushing(client: httpx.Client, server: ServerProcess) -> None:
    """GC passes run back to back while images are pushed; every push lands intact."""
    _age_everything(server)
    errors: list[str] = []
    pushed: list[tuple[str, str]] = []
    stop = threading.Event()

    def pusher(n: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for i in range(6):
                image = make_image(2, seed=f"p{n}-{i}")
                try:
                    push_image(c, f"busy{n}", image, f"t{i}")
                    pushed.append((f"busy{n}", image.digest))
                except AssertionError as exc:
                    errors.append(str(exc))

    def collector() -> None:
        while not stop.is_set():
            gc(server, "--grace-seconds", "30")

    threads = [threading.Thread(target=pusher, args=(n,)) for n in range(3)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    gc_thread.join()
    assert errors == []
    assert len(pushed) == 18
    for repo, digest in pushed:
        manifest = client.get(f"/v2/{repo}/manifests/{digest}")
        assert manifest.status_code == 200
        for layer in manifest.json()["layers"] + [manifest.json()["config"]]:
            blob = client.get(f"/v2/{repo}/blobs/{layer['digest']}")
            assert blob.status_code == 200 and sha256(blob.content) == layer["digest"]


def test_abandoned_uploads_expire(client: httpx.Client, server: ServerProcess) -> None:
    location = client.post("/v2/junk/blobs/uploads/").headers["Location"]
    client.patch(location, content=os.urandom(10_000))
    fresh = client.post("/v2/junk/blobs/uploads/").headers["Location"]
    uploads = server.data_dir / "storage" / "uploads"
    old_id = location.rsplit("/", 1)[1]
    then = time.time() - 3 * 86400
    os.utime(uploads / old_id, (then, then))
    out = gc(server)
    assert f"deleted expired upload {old_id}" in out
    assert not (uploads / old_id).exists()
    assert client.get(location).status_code == 404
    assert client.get(fresh).status_code == 204  # an active upload is left alone


def test_orphan_blob_files_are_swept(client: httpx.Client, server: ServerProcess) -> None:
    """A blob file with no metadata row (crash between publish and record) is reclaimed."""
    data = b"orphan bytes"
    digest = sha256(data)
    path: Path = server.data_dir / "storage" / "blobs" / "sha256" / digest[7:9] / digest[7:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - 7200
    os.utime(path, (then, then))
    out = gc(server)
    assert f"deleted orphan blob file {digest}" in out
    assert not path.exists()
