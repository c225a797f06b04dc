"""`trustyard migrate-storage` into a populated registry (SQLite + files on both sides).

The same merge code as embedded -> PostgreSQL + S3 (tests/integration/test_migrate_storage.py),
fast: repository ids that collide, a conflicting tag (refused with nothing written, then taken
with `--overwrite-tags`), an idempotent second run, trust data and simple signatures.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.inprocess.conftest import make_settings, serve
from tests.inprocess.helpers import Image, make_image, push_image
from trustyard.metadata.audit_base import AuditQuery
from trustyard.metadata.authority_base import StoredStatement
from trustyard.oci.digest import Digest
from trustyard.trust.store import AuditEvent, Change, TufFile
from trustyard.wiring import open_database


async def populate(data_dir: Path, images: dict[str, tuple[Image, str]], signed: str = "") -> None:
    async with serve(make_settings(data_dir)) as c:
        for repo, (image, tag) in images.items():
            await push_image(c, repo, image, tag)
    if signed:
        # Straight into the store: the HTTP route insists on a real OpenPGP signature.
        image = images[signed][0]
        db = await open_database(data_dir / "metadata.db")
        try:
            name = f"{image.digest}@0123456789abcdef0123456789abcdef"
            content = b"signature of " + image.manifest
            digest = Digest.parse(image.digest)
            assert await db.signatures.add_signature(signed, digest, name, content, lambda _: None)
            statement = StoredStatement("st-1", "grant", "KEY", 1.0, b"statement bytes")
            assert await db.authority.add_statement(statement)
        finally:
            await db.close()


async def publish_trust(data_dir: Path, gun: str, payload: bytes) -> None:
    db = await open_database(data_dir / "metadata.db")
    try:
        sha = hashlib.sha256(payload).hexdigest()
        await db.trust.publish(
            gun,
            [TufFile(gun, "root", 1, sha, payload)],
            Change(0, 0.0, gun, 1, sha, "update"),
            AuditEvent("publish", gun, "tester"),
        )
    finally:
        await db.close()


def migrate(tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    """The real command in its own process (it configures logging process-wide)."""
    (tmp_path / "from.toml").write_text(f'data_dir = "{tmp_path / "source"}"\nfsync = false\n')
    (tmp_path / "to.toml").write_text(f'data_dir = "{tmp_path / "target"}"\nfsync = false\n')
    args = ["--from", str(tmp_path / "from.toml"), "--to", str(tmp_path / "to.toml"), *extra]
    out = subprocess.run(
        [sys.executable, "-m", "trustyard", "migrate-storage", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stdout, out.stderr


async def snapshot(data_dir: Path) -> dict[str, object]:
    async with serve(make_settings(data_dir)) as c:
        repos = (await c.get("/v2/_catalog")).json()["repositories"]
        return {
            repo: {
                tag: (await c.head(f"/v2/{repo}/manifests/{tag}")).headers["docker-content-digest"]
                for tag in (await c.get(f"/v2/{repo}/tags/list")).json()["tags"]
            }
            for repo in repos
        }


async def check_served(target: Path, mine_app: Image, mine_lib: Image) -> None:
    """The merged source content, served by the target: manifests, blobs, signature, trust."""
    async with serve(make_settings(target)) as c:
        for repo, image in (("so/app", mine_app), ("so/lib", mine_lib)):
            assert (await c.get(f"/v2/{repo}/manifests/{image.digest}")).content == (image.manifest)
            for blob in image.blobs:
                digest = "sha256:" + hashlib.sha256(blob).hexdigest()
                assert (await c.get(f"/v2/{repo}/blobs/{digest}")).content == blob
        r = await c.get(f"/extensions/v2/so/app/signatures/{mine_app.digest}")
        assert [base64.b64decode(s["content"]) for s in r.json()["signatures"]] == [
            b"signature of " + mine_app.manifest
        ]
        for gun, body in (("so/app", b"source root"), ("other/one", b"target root")):
            r = await c.get(f"/v2/{gun}/_trust/tuf/root.json")
            assert r.status_code == 200 and body in r.content, (gun, r.status_code)


def test_merge_into_a_populated_registry(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    theirs_one, theirs_two = make_image("t1"), make_image("t2")
    theirs_app = make_image("t-app")
    mine_app, mine_lib = make_image("s-app", n_layers=2), make_image("s-lib")
    # Pushed first on each side: source "so/app" and target "other/one" both get id 1.
    asyncio.run(
        populate(
            target,
            {
                "other/one": (theirs_one, "v1"),
                "other/two": (theirs_two, "v1"),
                "so/app": (theirs_app, "latest"),
            },
        )
    )
    asyncio.run(
        populate(source, {"so/app": (mine_app, "latest"), "so/lib": (mine_lib, "v1")}, "so/app")
    )
    asyncio.run(publish_trust(source, "so/app", b'{"signed": "source root"}'))
    asyncio.run(publish_trust(target, "other/one", b'{"signed": "target root"}'))
    before = asyncio.run(snapshot(target))

    code, out, err = migrate(tmp_path)
    assert code == 1, out + err
    assert f"conflict: tag so/app:latest is {mine_app.digest} in the source" in err
    assert "nothing written" in err
    assert asyncio.run(snapshot(target)) == before

    code, out, err = migrate(tmp_path, "--overwrite-tags")
    assert code == 0, out + err
    assert "tags: 1 copied, 0 already there, 1 overwritten" in out
    assert "repositories: 1 copied, 1 already there" in out
    assert "authority_statements: 1 copied, 0 already there" in out
    assert "verified:" in out
    after = asyncio.run(snapshot(target))
    assert after == {
        "other/one": {"v1": theirs_one.digest},
        "other/two": {"v1": theirs_two.digest},
        "so/app": {"latest": mine_app.digest},
        "so/lib": {"v1": mine_lib.digest},
    }

    code, out, err = migrate(tmp_path)
    assert code == 0, out + err
    assert "copied 0 blobs" in out
    assert "tags: 0 copied, 2 already there" in out
    assert "simple_signatures: 0 copied, 1 already there" in out
    assert "authority_statements: 0 copied, 1 already there" in out
    assert "trust_files: 0 copied, 1 already there" in out

    asyncio.run(check_served(target, mine_app, mine_lib))


def test_a_diverging_trust_history_is_refused(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    asyncio.run(populate(source, {"so/app": (make_image("a"), "v1")}))
    asyncio.run(populate(target, {"x/y": (make_image("b"), "v1")}))
    asyncio.run(publish_trust(source, "so/app", b'{"signed": "one"}'))
    asyncio.run(publish_trust(target, "so/app", b'{"signed": "another"}'))
    code, out, err = migrate(tmp_path, "--overwrite-tags")
    assert code == 1, out + err
    assert "conflict: trust so/app: root version 1 differs on the two sides" in err
    assert asyncio.run(snapshot(target)) == {"x/y": {"v1": make_image("b").digest}}


def test_an_empty_target_gets_everything(tmp_path: Path) -> None:
    images = {"a/b": (make_image("a"), "v1"), "c/d": (make_image("c"), "v2")}
    asyncio.run(populate(tmp_path / "source", images))
    code, out, err = migrate(tmp_path)
    assert code == 0, out + err
    assert asyncio.run(snapshot(tmp_path / "target")) == {
        repo: {tag: image.digest} for repo, (image, tag) in images.items()
    }


def test_the_audit_log_is_merged_once(tmp_path: Path) -> None:
    images = {"a/b": (make_image("a"), "v1")}
    asyncio.run(populate(tmp_path / "source", images))
    for _ in range(2):  # the second run finds the entries there
        code, out, err = migrate(tmp_path)
        assert code == 0, out + err

    async def pushes(data_dir: Path) -> list[tuple[str, str, str]]:
        db = await open_database(data_dir / "metadata.db")
        try:
            found = await db.audit.query(AuditQuery(action="push"))
        finally:
            await db.close()
        return [(e.repository, e.tag, e.digest) for e in found]

    expected = [("a/b", "v1", images["a/b"][0].digest)]
    assert asyncio.run(pushes(tmp_path / "source")) == expected
    assert asyncio.run(pushes(tmp_path / "target")) == expected
