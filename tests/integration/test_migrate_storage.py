"""`trustyard migrate-storage`: embedded (files + SQLite) → PostgreSQL + S3, verified, resumable."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.images import OCI_INDEX, Image, make_image, make_index, push_image, sha256
from tests.integration.server import ServerProcess
from tests.services.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from trustyard.oci.digest import Digest
from trustyard.trust.store import AuditEvent, Change, TufFile
from trustyard.wiring import open_database


def migrate(source: Path, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "trustyard",
            "migrate-storage",
            "--from",
            str(source),
            "--to",
            str(target),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
    )


def test_embedded_to_postgres_and_s3(
    tmp_path: Path, empty_postgres_url: str, s3_server: S3Server, s3_bucket: str
) -> None:
    source_dir = tmp_path / "embedded"
    server = ServerProcess(source_dir).start()
    images = [make_image(3, seed=f"m{i}", layer_size=300_000) for i in range(3)]
    with httpx.Client(base_url=server.url) as c:
        for i, image in enumerate(images):
            push_image(c, f"team/app{i % 2}", image, f"v{i}")
        index = make_index([(images[0], "amd64")])
        assert (
            c.put(
                "/v2/team/app0/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX}
            ).status_code
            == 201
        )
    server.stop()

    source_cfg = tmp_path / "from.toml"
    source_cfg.write_text(f'data_dir = "{source_dir}"\n')
    target_cfg = tmp_path / "to.toml"
    target_cfg.write_text(
        f'data_dir = "{tmp_path / "target"}"\n'
        f'database_url = "{empty_postgres_url}"\n'
        'storage_backend = "s3"\n'
        "[s3]\n"
        f'bucket = "{s3_bucket}"\nendpoint_url = "{s3_server.endpoint}"\n'
        f'access_key = "{ACCESS_KEY}"\nsecret_key = "{SECRET_KEY}"\nredirect = false\n'
    )
    out = migrate(source_cfg, target_cfg)
    assert out.returncode == 0, out.stderr
    assert "copied 12 blobs" in out.stdout  # 3 images x (config + 3 layers)
    # Again: everything is already there, nothing is copied twice.
    again = migrate(source_cfg, target_cfg)
    assert again.returncode == 0, again.stderr
    assert "copied 0 blobs" in again.stdout

    target = ServerProcess(tmp_path / "target", extra_args=["--config", str(target_cfg)]).start()
    try:
        with httpx.Client(base_url=target.url) as c:
            assert c.get("/v2/_catalog").json()["repositories"] == ["team/app0", "team/app1"]
            assert c.get("/v2/team/app0/tags/list").json()["tags"] == ["multi", "v0", "v2"]
            for i, image in enumerate(images):
                repo = f"team/app{i % 2}"
                assert c.get(f"/v2/{repo}/manifests/v{i}").content == image.manifest
                for blob in image.blobs:
                    assert sha256(c.get(f"/v2/{repo}/blobs/{sha256(blob)}").content) == sha256(blob)
            push_image(
                c, "after/migration", make_image(seed="new"), "v1"
            )  # ids and sequences are sane
    finally:
        target.stop()


def test_corrupt_source_blob_is_refused(
    tmp_path: Path, empty_postgres_url: str, s3_server: S3Server, s3_bucket: str
) -> None:
    source_dir = tmp_path / "embedded"
    server = ServerProcess(source_dir).start()
    image = make_image(1, seed="corrupt")
    with httpx.Client(base_url=server.url) as c:
        push_image(c, "c", image, "v1")
    server.stop()
    layer = sha256(image.layers[0])[7:]
    (source_dir / "storage" / "blobs" / "sha256" / layer[:2] / layer).write_bytes(b"bit rot")
    source_cfg = tmp_path / "from.toml"
    source_cfg.write_text(f'data_dir = "{source_dir}"\n')
    target_cfg = tmp_path / "to.toml"
    target_cfg.write_text(
        f'data_dir = "{tmp_path / "t"}"\ndatabase_url = "{empty_postgres_url}"\nstorage_backend = "s3"\n[s3]\n'
        f'bucket = "{s3_bucket}"\nendpoint_url = "{s3_server.endpoint}"\naccess_key = "{ACCESS_KEY}"\nsecret_key = "{SECRET_KEY}"\n'
    )
    out = migrate(source_cfg, target_cfg)
    assert out.returncode != 0
    assert f"problem: blob sha256:{layer}: uploaded content has digest" in out.stderr
    assert "metadata not copied" in out.stderr
    assert "Traceback" not in out.stderr


def s3_config(path: Path, data_dir: Path, database_url: str, s3: S3Server, bucket: str) -> Path:
    path.write_text(
        f'data_dir = "{data_dir}"\n'
        f'database_url = "{database_url}"\n'
        'storage_backend = "s3"\n'
        "[s3]\n"
        f'bucket = "{bucket}"\nendpoint_url = "{s3.endpoint}"\n'
        f'access_key = "{ACCESS_KEY}"\nsecret_key = "{SECRET_KEY}"\nredirect = false\n'
    )
    return path


async def add_trust_and_signature(
    database: Path | str, gun: str, root: bytes, signed: tuple[str, str] | None = None
) -> None:
    """Trust data and a simple signature straight into the stores (the ports the server uses):
    the HTTP routes would insist on real TUF signatures and a real OpenPGP signature."""
    db = await open_database(database)
    try:
        sha = hashlib.sha256(root).hexdigest()
        await db.trust.publish(
            gun,
            [TufFile(gun, "root", 1, sha, root)],
            Change(0, 0.0, gun, 1, sha, "update"),
            AuditEvent("publish", gun, "tester"),
        )
        if signed is not None:
            repo, digest = signed
            name, content = (
                f"{digest}@0123456789abcdef0123456789abcdef",
                b"sig of " + digest.encode(),
            )
            assert await db.signatures.add_signature(
                repo, Digest.parse(digest), name, content, lambda _: None
            )
    finally:
        await db.close()


def tags_of(url: str) -> dict[str, dict[str, str]]:
    with httpx.Client(base_url=url) as c:
        return {
            repo: {
                tag: c.head(f"/v2/{repo}/manifests/{tag}").headers["docker-content-digest"]
                for tag in c.get(f"/v2/{repo}/tags/list").json()["tags"]
            }
            for repo in c.get("/v2/_catalog").json()["repositories"]
        }


def test_into_a_populated_postgres_and_s3(
    tmp_path: Path, postgres_url: str, s3_server: S3Server, s3_bucket: str
) -> None:
    """Ids collide (source so/app = 1, so/lib = 2; target other/one = 1, so/app = 2), so/app:latest
    differs: refused with nothing written, taken with --overwrite-tags, idempotent after."""
    target_cfg = s3_config(tmp_path / "to.toml", tmp_path / "t", postgres_url, s3_server, s3_bucket)
    theirs = {"other/one": make_image(1, seed="t1"), "so/app": make_image(1, seed="t-app")}
    mine = {"so/app": make_image(2, seed="s-app"), "so/lib": make_image(1, seed="s-lib")}
    target = ServerProcess(tmp_path / "t", extra_args=["--config", str(target_cfg)]).start()
    try:
        with httpx.Client(base_url=target.url) as c:
            for repo, image in theirs.items():
                push_image(c, repo, image, "latest")
        before = tags_of(target.url)
    finally:
        target.stop()
    asyncio.run(add_trust_and_signature(postgres_url, "other/one", b'{"signed":"target"}'))

    source_dir = tmp_path / "embedded"
    server = ServerProcess(source_dir).start()
    with httpx.Client(base_url=server.url) as c:
        for repo, image in mine.items():
            push_image(c, repo, image, "latest")
    server.stop()
    app_digest = sha256(mine["so/app"].manifest)
    asyncio.run(
        add_trust_and_signature(
            source_dir / "metadata.db", "so/app", b'{"signed":"source"}', ("so/app", app_digest)
        )
    )
    source_cfg = tmp_path / "from.toml"
    source_cfg.write_text(f'data_dir = "{source_dir}"\n')

    refused = migrate(source_cfg, target_cfg)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"conflict: tag so/app:latest is {app_digest} in the source" in refused.stderr
    assert "nothing written" in refused.stderr
    taken = migrate(source_cfg, target_cfg, "--overwrite-tags")
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "copied 5 blobs" in taken.stdout  # so/app: config + 2 layers; so/lib: config + 1
    assert "repositories: 1 copied, 1 already there" in taken.stdout
    assert "tags: 1 copied, 0 already there, 1 overwritten" in taken.stdout
    again = migrate(source_cfg, target_cfg)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "copied 0 blobs" in again.stdout and "tags: 0 copied, 2 already there" in again.stdout
    assert "trust_files: 0 copied, 1 already there" in again.stdout

    check_target(tmp_path / "t", target_cfg, before, mine)


def check_target(
    data_dir: Path, config: Path, before: dict[str, dict[str, str]], mine: dict[str, Image]
) -> None:
    """Tags on the right repositories, blobs, the signature and both GUNs served by the target."""
    app_digest = sha256(mine["so/app"].manifest)
    target = ServerProcess(data_dir, extra_args=["--config", str(config)]).start()
    try:
        assert tags_of(target.url) == {
            "other/one": before["other/one"],
            "so/app": {"latest": app_digest},
            "so/lib": {"latest": sha256(mine["so/lib"].manifest)},
        }
        with httpx.Client(base_url=target.url) as c:
            for repo, image in mine.items():
                for blob in image.blobs:
                    assert c.get(f"/v2/{repo}/blobs/{sha256(blob)}").content == blob
            listed = c.get(f"/extensions/v2/so/app/signatures/{app_digest}").json()["signatures"]
            assert [base64.b64decode(s["content"]) for s in listed] == [
                b"sig of " + app_digest.encode()
            ]
            for gun, body in (("so/app", b"source"), ("other/one", b"target")):
                r = c.get(f"/v2/{gun}/_trust/tuf/root.json")
                assert r.status_code == 200 and body in r.content, (gun, r.status_code)
            push_image(c, "after/merge", make_image(1, seed="new"), "v1")
    finally:
        target.stop()
