"""`trustyard backup` while pushes run, `trustyard restore` into a fresh data dir, and a server
on the restored dir serving every image pushed before the backup began; scrub passes there."""

from __future__ import annotations

import json
import stat
import threading
from pathlib import Path

import httpx

from tests.integration.images import Image, make_image, push_image, sha256
from tests.integration.server import ServerProcess
from tests.integration.test_scrub import trustyard


def _pull(client: httpx.Client, repo: str, image: Image) -> None:
    r = client.get(
        f"/v2/{repo}/manifests/{image.digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert r.status_code == 200 and r.content == image.manifest, (repo, r.status_code)
    for blob in image.blobs:
        r = client.get(f"/v2/{repo}/blobs/{sha256(blob)}")
        assert r.status_code == 200 and r.content == blob, (repo, r.status_code)


def test_backup_during_pushes_restores_into_a_serving_store(
    server: ServerProcess, client: httpx.Client, tmp_path: Path
) -> None:
    before = {f"pre/app{i}": make_image(2, seed=f"pre{i}", layer_size=50_000) for i in range(4)}
    for repo, image in before.items():
        push_image(client, repo, image, "v1")

    stop = threading.Event()
    pushed_during: list[str] = []
    errors: list[BaseException] = []

    def keep_pushing() -> None:
        try:
            with httpx.Client(base_url=server.url, timeout=30) as c:
                n = 0
                while not stop.is_set():
                    push_image(c, f"during/app{n % 3}", make_image(2, seed=f"d{n}"), f"t{n}")
                    pushed_during.append(f"t{n}")
                    n += 1
        except BaseException as exc:  # surfaced by the test thread below
            errors.append(exc)

    pusher = threading.Thread(target=keep_pushing)
    pusher.start()
    dest = tmp_path / "backup"
    try:
        while len(pushed_during) < 2:
            stop.wait(0.05)
        first = trustyard("backup", str(dest), "--data-dir", str(server.data_dir))
        second = trustyard("backup", str(dest), "--data-dir", str(server.data_dir))
    finally:
        stop.set()
        pusher.join(60)
    assert not errors, errors
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert "already there" in second.stdout
    info = json.loads((dest / "backup.json").read_text())
    assert info["format"] == 1 and info["schema_revision"] and "trust/passphrase" in info["files"]
    assert stat.S_IMODE((dest / "files" / "trust" / "passphrase").stat().st_mode) == 0o600

    target = tmp_path / "restored"
    restored = trustyard("restore", str(dest), "--data-dir", str(target))
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert (target / "trust" / "passphrase").read_bytes() == (
        server.data_dir / "trust" / "passphrase"
    ).read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    checked = trustyard("scrub", "--data-dir", str(target))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    again = trustyard("restore", str(dest), "--data-dir", str(target))
    assert again.returncode == 2 and "is not empty" in again.stderr

    copy = ServerProcess(target).start()
    try:
        with httpx.Client(base_url=copy.url, timeout=30) as c:
            for repo, image in before.items():
                _pull(c, repo, image)
                assert c.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
    finally:
        copy.stop()


def test_restore_verifies_every_blob_and_writes_no_metadata_on_failure(
    server: ServerProcess, client: httpx.Client, tmp_path: Path
) -> None:
    image = make_image(1, seed="verify")
    push_image(client, "v/app", image, "v1")
    dest = tmp_path / "backup"
    done = trustyard("backup", str(dest), "--data-dir", str(server.data_dir))
    assert done.returncode == 0, done.stderr
    layer = sha256(image.layers[0]).split(":")[1]
    (dest / "blobs" / "sha256" / layer[:2] / layer).write_bytes(b"not the layer")

    target = tmp_path / "restored"
    failed = trustyard("restore", str(dest), "--data-dir", str(target))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"corrupt blob sha256:{layer}" in failed.stderr
    assert not (target / "metadata.db").exists()

    assert (
        trustyard("restore", str(tmp_path / "nothing"), "--data-dir", str(target)).returncode == 2
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    refused = trustyard("backup", str(other), "--data-dir", str(server.data_dir))
    assert refused.returncode == 2 and "holds other files" in refused.stderr
    pg = trustyard(
        "backup", str(dest), "--data-dir", str(server.data_dir), env_database_url="postgresql://x/y"
    )
    assert pg.returncode == 2 and "pg_dump" in pg.stderr and "Traceback" not in pg.stderr
