"""Retention keeps Notary-signed tags (issue 21, gap 3): a tag whose manifest is a target of
the repository's Notary collection, in `targets` or a delegation, is signed content."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings
from tests.inprocess.helpers import make_image, push_image
from tests.trust.helpers import GUN, Repo
from tests.trust.test_server import parts
from trustyard.crypto.notary_keys import PrivateKey
from trustyard.http.app import create_app
from trustyard.registry.retention import notary_signed

REPO = GUN.partition("/")[2]  # the GUN is host/repository, as docker and notary name it


async def publish(client: httpx.AsyncClient, signed: dict[str, bytes], released: bytes) -> None:
    """What `notary publish` sends: root, targets (delegating targets/releases), the delegation
    and a snapshot; the server adds the timestamp."""
    base = f"/v2/{GUN}/_trust/tuf"
    key = (await client.get(f"{base}/timestamp.key")).json()
    repo = Repo()
    releases_key = PrivateKey.generate("ecdsa")
    root = repo.root(key)
    targets = repo.targets(signed, delegations=[("targets/releases", releases_key, [""])])
    releases = repo.targets(
        {"t1": released, "other": b"not a manifest"}, role="targets/releases", key=releases_key
    )
    files = {"root": root, "targets": targets, "targets/releases": releases}
    files["snapshot"] = repo.snapshot(files)
    r = await client.post(f"{base}/", files=parts(files))
    assert r.status_code == 200, r.text


def retention(data_dir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    where = ["--data-dir", str(data_dir), "--config", str(config)]
    return subprocess.run(
        [sys.executable, "-m", "trustyard", "retention", "run", *args, "--json", *where],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
    )


async def test_notary_signed_tags_are_kept(tmp_path: Path, migrated_database: Path) -> None:
    rules = [{"repository": "team/*", "tags": ["t*"], "keep_last": 1}]
    settings = make_settings(
        fresh_data_dir(tmp_path / "data", migrated_database), lifecycle={"retention": rules}
    )
    config = tmp_path / "trustyard.toml"
    config.write_text(
        '[[lifecycle.retention]]\nrepository = "team/*"\ntags = ["t*"]\nkeep_last = 1\n'
    )
    images = [make_image(f"notary-{i}") for i in range(4)]
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            for i, image in enumerate(images):  # t3 is the newest
                await push_image(client, REPO, image, f"t{i}")
            # t0 signed in targets, t1 by the releases delegation; t2 is not signed anywhere
            await publish(client, {"t0": images[0].manifest}, images[1].manifest)

    out = retention(settings.data_dir, config, "--dry-run")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [d["tag"] for d in report["delete"]] == ["t2"]
    kept = {d["tag"]: d["reason"] for d in report["keep"]}
    assert kept == {
        "t0": "signed (Notary)",
        "t1": "signed (Notary)",
        "t3": "among the 1 most recently pushed",
    }
    out = retention(settings.data_dir, config)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["deleted"] == 1


class Files:
    """Trust data as stored: one GUN for the repository, one for a repository not asked about."""

    def __init__(self, targets: bytes) -> None:
        self.targets = targets

    async def guns(self) -> list[str]:
        return [GUN, "example.com/elsewhere"]

    async def file(self, gun: str, role: str, version: int | None = None) -> bytes | None:
        return self.targets if role == "targets" else None


async def test_unreadable_trust_data_keeps_the_whole_repository() -> None:
    """Retention cannot tell what a broken collection signs: it keeps every tag of it."""
    found = await notary_signed(Files(b'{"signed": "not targets"}'), {REPO, "elsewhere"})
    assert found.signed == set() and found.unreadable == {REPO, "elsewhere"}
    good = Repo().targets({"v1": b"manifest"})
    found = await notary_signed(Files(good), {REPO})
    digest = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
    assert found.signed == {(REPO, digest)} and found.unreadable == set()
