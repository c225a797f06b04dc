"""Docker schema 1 with the real skopeo: `--format v2s1` (skopeo signs with a key it generates)
pushes to a server with `TRUSTYARD_SCHEMA1=verify`, pulls back with every digest checked by
skopeo's own libtrust code, and `trustyard signatures` names the JWS key. The default server
refuses the push with the clear message; hand-made bad manifests get their error codes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import make_image, push_blob, write_layout
from tests.integration.server import ServerProcess
from tests.jws_sign import manifest_body, p256, sign_pretty
from trustyard.oci import mediatypes as mt
from trustyard.oci import schema1

pytestmark = [pytest.mark.needs_skopeo]


@pytest.fixture(scope="module")
def verifying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("schema1")
    srv = ServerProcess(root / "data", extra_env={"TRUSTYARD_SCHEMA1": "verify"}).start()
    yield srv
    srv.stop()


def skopeo(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(require("skopeo"), *args, check=check)


def layout(tmp_path: Path, seed: str) -> Path:
    # converting to schema 1 needs one config history entry per layer
    return write_layout(tmp_path / "src", {"v1": make_image(2, seed=seed, history=True)})


def test_v2s1_push_pull_and_signatures(verifying: ServerProcess, tmp_path: Path) -> None:
    ref = f"docker://{verifying.host}/old/app:v1"
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s1",
        f"oci:{layout(tmp_path, 's1')}:v1",
        ref,
    )

    r = httpx.get(
        f"{verifying.url}/v2/old/app/manifests/v1",
        headers={"Accept": mt.DOCKER_SCHEMA1_SIGNED},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == mt.DOCKER_SCHEMA1_SIGNED
    parsed = schema1.parse(r.content)
    digest = r.headers["docker-content-digest"]
    assert digest == str(parsed.digest) and parsed.name == "old/app" and parsed.signatures

    raw = skopeo("inspect", "--raw", "--tls-verify=false", ref).stdout.encode()
    assert raw in (r.content, r.content + b"\n")  # skopeo prints a final newline
    inspect = json.loads(skopeo("inspect", "--tls-verify=false", ref).stdout)
    assert inspect["Digest"] == digest

    # pull by digest: skopeo recomputes the digest (libtrust payload) and checks every blob
    out = tmp_path / "pulled"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        f"docker://{verifying.host}/old/app@{digest}",
        f"dir:{out}",
    )
    assert (out / "manifest.json").read_bytes() == r.content

    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "trustyard",
            "signatures",
            f"{verifying.host}/old/app:v1",
            "--plain-http",
            "--no-notary",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["digest"] == digest
    [jws] = [s for s in report["signatures"] if s["kind"] == "jws"]
    assert jws["status"] == "verified"
    assert jws["jws"]["alg"].startswith(("ES", "RS"))
    assert jws["jws"]["key_id"] == jws["signer"]
    assert len(jws["signer"].split(":")) == 12  # the libtrust KeyID form


def test_refused_by_default(server: ServerProcess, tmp_path: Path) -> None:
    ref = f"docker://{server.host}/old/app:v1"
    out = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--format",
        "v2s1",
        f"oci:{layout(tmp_path, 'refused')}:v1",
        ref,
        check=False,
    )
    assert out.returncode != 0
    assert "schema 1" in out.stderr and "refuse" in out.stderr, out.stderr


def test_tampered_and_missing_layer(verifying: ServerProcess) -> None:
    with httpx.Client(base_url=verifying.url, timeout=30) as c:
        sums = [push_blob(c, "old/hand", data) for data in (b"one", b"two")]
        raw = sign_pretty(manifest_body("old/hand", sums), [p256()])
        headers = {"Content-Type": mt.DOCKER_SCHEMA1_SIGNED}
        r = c.put(
            "/v2/old/hand/manifests/v1", content=raw.replace(b'"v1"', b'"v2"'), headers=headers
        )
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_UNVERIFIED"
        assert "does not verify" in r.json()["errors"][0]["message"]

        missing = "sha256:" + "d" * 64
        raw = sign_pretty(manifest_body("old/hand", [sums[0], missing]), [p256()])
        r = c.put("/v2/old/hand/manifests/v1", content=raw, headers=headers)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        assert c.get("/v2/old/hand/manifests/v1").status_code == 404
