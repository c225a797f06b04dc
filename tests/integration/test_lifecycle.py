"""Tag lifecycle against a real `trustyard serve`: immutable tags (HTTP, skopeo, podman), tag
history and restore through the CLI, GC keeping history targets."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    make_image,
    push_blob,
    push_image,
    sha256,
    write_layout,
)
from tests.integration.server import ServerProcess

CONFIG = """
[lifecycle]
history_keep_days = 7
immutable = [{repository = "team/*", tags = ["v*"]}]

[[lifecycle.retention]]
repository = "ret/*"
tags = ["t*"]
keep_last = 10
keep_pulled_days = 1
"""


@pytest.fixture(scope="module")
def lifecycle_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("lifecycle")
    config = root / "trustyard.toml"
    config.write_text(CONFIG)
    srv = ServerProcess(root / "data", extra_args=["--config", str(config)]).start()
    yield srv
    srv.stop()


def cli(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    config = server.data_dir.parent / "trustyard.toml"
    where = ["--data-dir", str(server.data_dir), "--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *args, *where],
        capture_output=True,
        text=True,
        timeout=120,
    )


def tag_digest(server: ServerProcess, repo: str, tag: str) -> str | None:
    r = httpx.head(
        f"{server.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}, timeout=30
    )
    return r.headers["docker-content-digest"] if r.status_code == 200 else None


def test_immutable_tag_over_http(lifecycle_server: ServerProcess) -> None:
    first, second = make_image(seed="imm-1"), make_image(seed="imm-2")
    with httpx.Client(base_url=lifecycle_server.url, timeout=30) as client:
        push_image(client, "team/http", first, "v1")
        push_image(client, "team/http", first, "v1")  # the same digest again is fine
        push_image(client, "team/http", second)  # by digest: no tag moves
        r = client.put(
            "/v2/team/http/manifests/v1",
            content=second.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 403, r.text
        error = r.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert "team/http:v1 is immutable" in error["message"]
        assert 'repository = "team/*"' in error["message"]
        # deleting it, by tag or through its manifest, is refused too
        assert client.delete("/v2/team/http/manifests/v1").status_code == 403
        r = client.delete(f"/v2/team/http/manifests/{first.digest}")
        assert r.status_code == 403 and "cannot be deleted" in r.text
        # tags no rule covers still move; other repositories are not covered
        push_image(client, "team/http", first, "latest")
        push_image(client, "team/http", second, "latest")
        push_image(client, "other/http", first, "v1")
        push_image(client, "other/http", second, "v1")
    assert tag_digest(lifecycle_server, "team/http", "v1") == first.digest
    assert tag_digest(lifecycle_server, "other/http", "v1") == second.digest


def _two_layouts(tmp_path: Path, seed: str) -> tuple[Path, Path]:
    return (
        write_layout(tmp_path / "a", {"v1": make_image(seed=f"{seed}-a")}),
        write_layout(tmp_path / "b", {"v1": make_image(seed=f"{seed}-b")}),
    )


@pytest.mark.needs_skopeo
def test_immutable_tag_refused_for_skopeo(lifecycle_server: ServerProcess, tmp_path: Path) -> None:
    skopeo = require("skopeo")
    a, b = _two_layouts(tmp_path, "skopeo")
    dest = f"docker://{lifecycle_server.host}/team/skopeo:v1"
    run(skopeo, "copy", "--dest-tls-verify=false", f"oci:{a}:v1", dest)
    run(skopeo, "copy", "--dest-tls-verify=false", f"oci:{a}:v1", dest)  # same digest: fine
    refused = run(skopeo, "copy", "--dest-tls-verify=false", f"oci:{b}:v1", dest, check=False)
    assert refused.returncode != 0
    assert "team/skopeo:v1 is immutable" in refused.stderr, refused.stderr
    assert "denied" in refused.stderr.lower()


@pytest.mark.needs_podman
@pytest.mark.needs_skopeo
@pytest.mark.slow
def test_immutable_tag_refused_for_podman(lifecycle_server: ServerProcess, tmp_path: Path) -> None:
    exe, skopeo = require("podman"), require("skopeo")
    host = lifecycle_server.host
    a, b = _two_layouts(tmp_path, "podman")
    run(skopeo, "copy", "--dest-tls-verify=false", f"oci:{a}:v1", f"docker://{host}/team/pod:v1")
    run(skopeo, "copy", "--dest-tls-verify=false", f"oci:{b}:v1", f"docker://{host}/team/src:b")
    runroot = Path(tempfile.mkdtemp(prefix="ty-podman-"))  # podman: runroot under 50 chars
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "TMPDIR": str(tmp_path)}
    base = [
        "--root", str(tmp_path / "root"), "--runroot", str(runroot), "--storage-driver", "vfs",
        "--cgroup-manager", "cgroupfs", "--events-backend", "file",
    ]  # fmt: skip
    try:
        run(exe, *base, "pull", f"{host}/team/src:b", env=env)
        run(exe, *base, "tag", f"{host}/team/src:b", f"{host}/team/pod:v1", env=env)
        refused = run(exe, *base, "push", f"{host}/team/pod:v1", env=env, check=False)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    assert refused.returncode != 0
    assert "team/pod:v1 is immutable" in refused.stderr, refused.stderr


def test_tag_history_and_restore_after_a_bad_push(lifecycle_server: ServerProcess) -> None:
    good, bad = make_image(seed="hist-good"), make_image(seed="hist-bad")
    with httpx.Client(base_url=lifecycle_server.url, timeout=30) as client:
        push_image(client, "hist/app", good, "latest")
        push_image(client, "hist/app", bad, "latest")  # the bad push
    out = cli(lifecycle_server, "tag", "history", "hist/app:latest", "--json")
    assert out.returncode == 0, out.stderr
    moves = json.loads(out.stdout)
    assert [(m["old_digest"], m["new_digest"]) for m in moves] == [
        (good.digest, bad.digest),
        (None, good.digest),
    ]
    assert all(m["repository"] == "hist/app" and m["tag"] == "latest" for m in moves)

    out = cli(lifecycle_server, "tag", "restore", "hist/app:latest", good.digest)
    assert out.returncode == 0, out.stderr
    assert tag_digest(lifecycle_server, "hist/app", "latest") == good.digest
    text = cli(lifecycle_server, "tag", "history", "hist/app:latest").stdout.splitlines()
    assert text[0].endswith(f"{bad.digest} -> {good.digest}  by cli")

    # hostile: a manifest the repository does not hold, a malformed digest, a malformed ref
    gone = "sha256:" + "0" * 64
    out = cli(lifecycle_server, "tag", "restore", "hist/app:latest", gone)
    assert out.returncode == 1 and "is no longer in repository hist/app" in out.stderr
    out = cli(lifecycle_server, "tag", "restore", "hist/app:latest", "sha256:xyz")
    assert out.returncode == 2 and "invalid sha256 digest" in out.stderr
    out = cli(lifecycle_server, "tag", "history", "no-tag-here")
    assert out.returncode == 2 and "is not REPO:TAG" in out.stderr
    assert tag_digest(lifecycle_server, "hist/app", "latest") == good.digest


def test_immutable_override_is_explicit(lifecycle_server: ServerProcess) -> None:
    first, second = make_image(seed="force-1"), make_image(seed="force-2")
    with httpx.Client(base_url=lifecycle_server.url, timeout=30) as client:
        push_image(client, "team/force", first, "v1")
        push_image(client, "team/force", second)
    out = cli(lifecycle_server, "tag", "restore", "team/force:v1", second.digest)
    assert out.returncode == 1 and "is immutable" in out.stderr
    out = cli(lifecycle_server, "tag", "delete", "team/force:v1")
    assert out.returncode == 1 and "cannot be deleted" in out.stderr
    assert tag_digest(lifecycle_server, "team/force", "v1") == first.digest
    out = cli(lifecycle_server, "tag", "restore", "team/force:v1", second.digest, "--force")
    assert out.returncode == 0, out.stderr
    assert tag_digest(lifecycle_server, "team/force", "v1") == second.digest
    out = cli(lifecycle_server, "tag", "delete", "team/force:v1", "--force")
    assert out.returncode == 0, out.stderr
    assert tag_digest(lifecycle_server, "team/force", "v1") is None
    moves = json.loads(cli(lifecycle_server, "tag", "history", "team/force:v1", "--json").stdout)
    assert [m["new_digest"] for m in moves] == [None, second.digest, first.digest]


def test_gc_keeps_history_targets(lifecycle_server: ServerProcess) -> None:
    """history_keep_days = 7: the manifest a tag left survives GC, so restore still works."""
    server = lifecycle_server
    old, new = make_image(seed="gc-old"), make_image(seed="gc-new")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        push_image(client, "gc/app", old, "latest")
        push_image(client, "gc/app", new, "latest")
        never = make_image(seed="gc-never-tagged")
        push_image(client, "gc/app", never)
    db = sqlite3.connect(server.data_dir / "metadata.db")
    with db:
        db.execute("UPDATE manifests SET created_at=?", (time.time() - 7200,))
    db.close()
    out = cli(server, "gc")
    assert out.returncode == 0, out.stderr
    assert f"gc/app@{never.digest}" in out.stdout and old.digest not in out.stdout
    out = cli(server, "tag", "restore", "gc/app:latest", old.digest)
    assert out.returncode == 0, out.stderr
    assert tag_digest(server, "gc/app", "latest") == old.digest


def test_retention_dry_run_then_run_on_50_tags(lifecycle_server: ServerProcess) -> None:
    images = [make_image(1, seed=f"ret-{i}") for i in range(50)]
    with httpx.Client(base_url=lifecycle_server.url, timeout=30) as client:
        for i, image in enumerate(images):
            push_image(client, "ret/app", image, f"t{i}")
        # t1 is signed (a cosign signature tag names it)
        sig = make_image(1, seed="ret-sig")
        push_image(client, "ret/app", sig, images[1].digest.replace(":", "-") + ".sig")
        push_image(client, "ret/app", images[2], "keep-me")  # no rule matches this tag
    db = sqlite3.connect(lifecycle_server.data_dir / "metadata.db")
    with db:  # pushed 3 days ago and earlier, t49 the newest
        for i in range(50):
            db.execute(
                "UPDATE tags SET updated_at=? WHERE name=?",
                (time.time() - 3 * 86400 - (50 - i), f"t{i}"),
            )
    # t0 is pulled now: recorded (off the request path) as a recent pull
    r = httpx.get(
        f"{lifecycle_server.url}/v2/ret/app/manifests/t0", headers={"Accept": OCI_MANIFEST}
    )
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    while not db.execute(
        "SELECT 1 FROM manifest_pulls WHERE digest=?", (images[0].digest,)
    ).fetchall():
        assert time.monotonic() < deadline, "the pull was not recorded"
        time.sleep(0.1)
    db.close()

    out = cli(lifecycle_server, "retention", "run", "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    doomed = {d["tag"] for d in report["delete"]}
    assert doomed == {f"t{i}" for i in range(3, 40)} | {"t2"}
    kept = {d["tag"]: d["reason"] for d in report["keep"]}
    assert kept["t0"].startswith("pulled or pushed within 1 days")
    assert kept["t1"] == "signed (cosign)"
    assert set(kept) == {"t0", "t1", *(f"t{i}" for i in range(40, 50))}
    # "keep-me" (and other tests' tags on this server) match no rule: left alone, not listed
    assert report["ungoverned"] >= 1 and report["deleted"] == 0
    # a dry run changes nothing (a tags list, as a manifest HEAD would count as a pull)
    listed = httpx.get(f"{lifecycle_server.url}/v2/ret/app/tags/list").json()["tags"]
    assert len(listed) == 52

    text = cli(lifecycle_server, "retention", "run")
    assert text.returncode == 0, text.stderr
    assert "deleted 38 of 50 governed tags" in text.stdout
    listed = httpx.get(f"{lifecycle_server.url}/v2/ret/app/tags/list").json()["tags"]
    assert {t for t in listed if t.startswith("t")} == set(kept)
    assert "keep-me" in listed
    moves = json.loads(cli(lifecycle_server, "tag", "history", "ret/app:t5", "--json").stdout)
    assert moves[0]["new_digest"] is None and moves[0]["actor"] == "retention"


QUOTA_CONFIG = """
[lifecycle]
quotas = [{namespace = "small", bytes = 5000}]
"""


def _stored_files(server: ServerProcess) -> set[str]:
    return {p.name for p in (server.data_dir / "storage").rglob("*") if p.is_file()}


def test_quota_refusals_leave_nothing_stored(tmp_path: Path) -> None:
    config = tmp_path / "trustyard.toml"
    config.write_text(QUOTA_CONFIG)
    server = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        _quota_checks(server)
    finally:
        server.stop()


def _manifest(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": sha256(x), "size": len(x)} for x in layers
            ],
        }
    ).encode()


def _quota_checks(server: ServerProcess) -> None:
    config, layer = b'{"os":"linux"}', os.urandom(4000)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        push_blob(client, "small/a", config)
        push_blob(client, "small/a", layer)
        push_blob(client, "small/b", layer)  # shared within the namespace: counted once
        push_blob(client, "big/x", os.urandom(9000))  # another namespace has no limit
        before = _stored_files(server)

        # a monolithic upload over the quota
        big = os.urandom(2000)
        r = client.post(
            "/v2/small/a/blobs/uploads/",
            params={"digest": sha256(big)},
            content=big,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert r.status_code == 403, r.text
        error = r.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert "quota exceeded for namespace small: it uses 4014 of 5000 bytes" in error["message"]

        # a chunked upload: refused at the closing PUT, and the session is gone with its bytes
        r = client.post("/v2/small/a/blobs/uploads/")
        location = r.headers["location"]
        r = client.patch(
            location, content=big, headers={"Content-Type": "application/octet-stream"}
        )
        assert r.status_code == 202, r.text
        r = client.put(location, params={"digest": sha256(big)})
        assert r.status_code == 403 and "quota exceeded" in r.text
        assert client.get(location).status_code == 404
        assert client.head(f"/v2/small/a/blobs/{sha256(big)}").status_code == 404
        assert _stored_files(server) == before

        # a mount from another namespace over the quota falls back to an upload (202)
        mounted = client.post(
            "/v2/small/a/blobs/uploads/",
            params={"mount": sha256(os.urandom(1)), "from": "big/x"},
        )
        assert mounted.status_code == 202

        # a manifest whose bytes would go over: refused, not stored
        manifest = _manifest(config, [layer] * 6)  # ~1.2 kB of JSON, over the 986 bytes left
        assert len(manifest) > 5000 - 4014
        r = client.put(
            "/v2/small/a/manifests/v1", content=manifest, headers={"Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 403 and "manifest sha256:" in r.text
        assert client.get("/v2/small/a/tags/list").json()["tags"] in ([], None)

    out = cli(server, "quota", "show", "--json")
    assert out.returncode == 0, out.stderr
    usage = {u["namespace"]: u for u in json.loads(out.stdout)}
    assert usage["small"] == {"namespace": "small", "used": 4014, "limit": 5000}
    assert usage["big"]["used"] == 9000 and usage["big"]["limit"] is None
