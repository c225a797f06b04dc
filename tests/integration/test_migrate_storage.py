"""`trustyard migrate-storage`: embedded (files + SQLite) → PostgreSQL + S3, verified, resumable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.images import OCI_INDEX, make_image, make_index, push_image, sha256
from tests.integration.server import ServerProcess
from tests.services.s3 import ACCESS_KEY, SECRET_KEY, S3Server


def migrate(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
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
