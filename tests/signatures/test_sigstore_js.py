"""Independent check of our sigstore bundles with sigstore-js (@sigstore/verify from npm).

Key-based and offline: an empty trusted root, our public key looked up by the bundle's
`publicKey.hint`, and tlog/ctlog/timestamp thresholds at 0 (sigstore-js/verify.js). The npm
packages (versions pinned in sigstore-js/package.json) are installed once into
`.sigstore-js-cache/` next to this file (git-ignored); that needs the npm registry, the
verification itself does not.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess
from trustyard.signing import cosign

HERE = Path(__file__).parent
SCRIPT = HERE / "sigstore-js" / "verify.js"
CACHE = HERE / ".sigstore-js-cache"


def _unavailable(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{message}; .ci/run must install nodejs and npm (scripts/install-deps.sh)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def node_env() -> dict[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node/npm are not installed")
    assert npm is not None
    package = HERE / "sigstore-js" / "package.json"
    modules = CACHE / "node_modules"
    stamp = CACHE / "package.json"
    if not (modules / "@sigstore" / "verify").is_dir() or (
        not stamp.exists() or stamp.read_bytes() != package.read_bytes()
    ):
        CACHE.mkdir(exist_ok=True)
        shutil.copyfile(package, stamp)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--no-package-lock"],
            cwd=CACHE, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            _unavailable(f"npm install of sigstore-js failed: {done.stderr.strip()[-500:]}")
    return {**os.environ, "NODE_PATH": str(modules)}


def sigstore_js(env: dict[str, str], bundle: bytes, public_pem: bytes, tmp: Path) -> dict[str, Any]:
    (tmp / "bundle.json").write_bytes(bundle)
    (tmp / "key.pem").write_bytes(public_pem)
    proc = subprocess.run(
        [shutil.which("node") or "node", str(SCRIPT), str(tmp / "bundle.json"), str(tmp / "key.pem")],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (proc.returncode == 0) == result["ok"], proc.stderr
    return result


class Sha256Signer:
    """A P-384 key signing with SHA-256, as cosign does by default (sigstore/cosign#5091)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, ec.ECDSA(hashes.SHA256()))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("sigjs") / "data").start()
    yield s
    s.stop()


def test_bundle_signed_by_the_cli_verifies_with_sigstore_js(
    srv: ServerProcess, node_env: dict[str, str], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.key").write_bytes(cosign.encrypt_cosign_key(key, b"pw"))
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        digest = push_image(c, "js/app", make_image(1, seed="sigstore-js"), "v1")
    signed = subprocess.run(
        [sys.executable, "-m", "trustyard", "sign", "cosign", f"{srv.host}/js/app:v1", "--key",
         str(tmp_path / "cosign.key"), "--mode", "bundle", "--plain-http"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COSIGN_PASSWORD": "pw"},
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        listed = c.get(f"/v2/js/app/referrers/{digest}").json()["manifests"]
        (entry,) = [m for m in listed if m["artifactType"] == cosign.BUNDLE_V03]
        manifest = c.get(
            f"/v2/js/app/manifests/{entry['digest']}", headers={"Accept": cosign.OCI_MANIFEST}
        ).json()
        bundle = c.get(f"/v2/js/app/blobs/{manifest['layers'][0]['digest']}").content
    result = sigstore_js(node_env, bundle, cosign.public_pem(key.public_key()), tmp_path)
    assert result["ok"] is True, result
    assert result["hint"] == cosign.key_id(key.public_key())
    assert result["subject"] == [
        {"name": f"{srv.host}/js/app", "digest": {"sha256": digest.split(":")[1]}}
    ]


def test_sigstore_js_refuses_another_key_and_a_tampered_statement(
    node_env: dict[str, str], tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = cosign.make_bundle(cosign.KeySigner(key), "r.example/app", "sha256:" + "ab" * 32)
    other = ec.generate_private_key(ec.SECP256R1())
    wrong_key = sigstore_js(node_env, bundle, cosign.public_pem(other.public_key()), tmp_path)
    assert wrong_key == {
        "ok": False,
        "code": "SIGNATURE_ERROR",
        "error": "signature verification failed",
    }
    doc = json.loads(bundle)
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "cd" * 32  # claim another image
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    tampered = sigstore_js(
        node_env, json.dumps(doc).encode(), cosign.public_pem(key.public_key()), tmp_path
    )
    assert tampered["ok"] is False and tampered["code"] == "SIGNATURE_ERROR"


def test_p384_hash_interop(node_env: dict[str, str], tmp_path: Path) -> None:
    """sigstore-js verifies DSSE signatures with SHA-256 whatever the curve (node's default for
    EC keys): our P-384 bundles, hashed with SHA-384 as the curve implies, are refused; one made
    as cosign makes them (SHA-256) verifies there, and with ours given `hash_override`."""
    key = ec.generate_private_key(ec.SECP384R1())
    pem = cosign.public_pem(key.public_key())
    digest = "sha256:" + "ef" * 32
    ours = cosign.make_bundle(cosign.KeySigner(key), "r.example/app", digest)
    assert cosign.check_bundle(ours, [key.public_key()], digest).status == "verified"
    refused = sigstore_js(node_env, ours, pem, tmp_path)
    assert refused["ok"] is False and refused["code"] == "SIGNATURE_ERROR"
    cosign_like = cosign.make_bundle(Sha256Signer(key), "r.example/app", digest)
    assert sigstore_js(node_env, cosign_like, pem, tmp_path)["ok"] is True
    assert cosign.check_bundle(cosign_like, [key.public_key()], digest).status == "failed"
    assert (
        cosign.check_bundle(cosign_like, [key.public_key()], digest, "sha256").status == "verified"
    )
