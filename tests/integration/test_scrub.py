"""`trustyard scrub` against a running `trustyard serve`: a flipped byte on disk is found,
quarantined and answered with 404 instead of wrong bytes; a re-push heals it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.images import make_image, push_image, sha256
from tests.integration.server import ServerProcess


def trustyard(*args: str, env_database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")}
    if env_database_url is not None:
        env["TRUSTYARD_DATABASE_URL"] = env_database_url
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def blob_file(data_dir: Path, digest: str) -> Path:
    hexdigest = digest.split(":")[1]
    return data_dir / "storage" / "blobs" / "sha256" / hexdigest[:2] / hexdigest


def test_scrub_finds_quarantines_and_a_push_heals(
    server: ServerProcess, client: httpx.Client
) -> None:
    image = make_image(3, seed="scrub", layer_size=300_000)
    push_image(client, "lib/app", image, "v1")
    data_dir = str(server.data_dir)
    ok = trustyard("scrub", "--data-dir", data_dir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok: 1 repositories, 1 manifests, 4 blobs"), ok.stdout

    layer = sha256(image.layers[1])
    path = blob_file(server.data_dir, layer)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x40
    path.write_bytes(bytes(data))
    # Before the scrub, the flipped bytes are served as they are (nobody re-hashes on GET).
    assert client.get(f"/v2/lib/app/blobs/{layer}").content == bytes(data)

    found = trustyard("scrub", "--data-dir", data_dir, "--json", "--rate", "50")
    assert found.returncode == 1, found.stdout + found.stderr
    report = json.loads(found.stdout)
    assert report["ok"] is False
    assert [(b["digest"], b["quarantined"]) for b in report["corrupt_blobs"]] == [(layer, True)]
    assert report["corrupt_blobs"][0]["unlinked_from"] == ["lib/app"]

    r = client.get(f"/v2/lib/app/blobs/{layer}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert client.head(f"/v2/lib/app/blobs/{layer}").status_code == 404

    text = trustyard("scrub", "--data-dir", data_dir)
    assert text.returncode == 1
    assert f"missing blob {layer} referenced by lib/app@{image.digest}" in text.stdout

    push_image(client, "lib/app", image, "v1")
    assert client.get(f"/v2/lib/app/blobs/{layer}").content == image.layers[1]
    healed = trustyard("scrub", "--data-dir", data_dir, "--repository", "lib/*")
    assert healed.returncode == 0, healed.stdout + healed.stderr


def test_scrub_usage_errors_exit_2(tmp_path: Path) -> None:
    empty = trustyard("scrub", "--data-dir", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "error: no trustyard store" in empty.stderr
    bad_rate = trustyard("scrub", "--data-dir", str(tmp_path), "--rate", "-1")
    assert bad_rate.returncode == 2 and bad_rate.stderr.startswith("error: --rate")
    assert "Traceback" not in empty.stderr + bad_rate.stderr
