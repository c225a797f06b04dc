"""Interop both ways: the reference `docker-registry` (Distribution 2.8) trusting our issuer, and
our registry trusting a separately configured issuer (seed 000's setup), with skopeo."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.integration import AuthServerProcess, add_user, bearer, challenge, token_server
from tests.integration.clienttools import read_layout, run
from tests.integration.conftest import require
from tests.integration.images import make_image, write_layout
from tests.integration.server import free_port
from trustyard.auth.token_keys import self_signed_certificate
from trustyard.crypto.keyid import certificate_der_kid, libtrust_kid

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.slow]

REFERENCE_CONFIG = """\
version: 0.1
log:
  level: debug
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
auth:
  token:
    realm: {realm}
    service: trustyard
    issuer: trustyard
    rootcertbundle: {bundle}
"""


def start_reference(
    tmp: Path, realm: str, bundle: Path
) -> tuple[subprocess.Popen[bytes], str, Path]:
    exe = require("docker-registry")
    port = free_port()
    config = tmp / "registry.yml"
    config.write_text(
        REFERENCE_CONFIG.format(root=tmp / "ref-data", port=port, realm=realm, bundle=bundle)
    )
    log = tmp / "reference.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    proc = subprocess.Popen(
        [exe, "serve", str(config)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/", timeout=1).status_code == 401:
                return proc, f"127.0.0.1:{port}", log
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"docker-registry did not start:\n{log.read_text()[-3000:]}")


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[AuthServerProcess]:
    data = tmp_path / "issuer"
    add_user(data, "alice", "alice-pw")
    add_user(data, "bob", "bob-pw")
    server = token_server(data).start()
    yield server
    server.stop()


def skopeo(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(require("skopeo"), *args, check=check)


@pytest.mark.parametrize("x5c", ["true", "false"])
def test_reference_registry_accepts_our_tokens(tmp_path: Path, x5c: str) -> None:
    data = tmp_path / "issuer"
    add_user(data, "alice", "alice-pw")
    add_user(data, "bob", "bob-pw")
    # x5c=false: Distribution 2.8 must find the key by its libtrust kid alone (seed 000).
    ours = token_server(data, TRUSTYARD_AUTH__TOKEN__X5C=x5c).start()
    bundle = data / "auth" / "token-signing" / "cert.pem"
    proc, host, _log = start_reference(tmp_path, f"{ours.url}/auth/token", bundle)
    try:
        authfile = tmp_path / "auth.json"
        skopeo(
            "login",
            "--tls-verify=false",
            "--authfile",
            authfile,
            "-u",
            "alice",
            "-p",
            "alice-pw",
            host,
        )
        image = make_image(2, seed=f"ref-{x5c}")
        src = write_layout(tmp_path / "src", {"v1": image})
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            authfile,
            f"oci:{src}:v1",
            f"docker://{host}/alice/app:v1",
        )
        skopeo(
            "copy",
            "--src-tls-verify=false",
            "--authfile",
            authfile,
            f"docker://{host}/alice/app:v1",
            f"oci:{tmp_path / 'out'}:v1",
        )
        assert read_layout(tmp_path / "out", "v1").manifest_bytes == image.manifest
        denied = skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            authfile,
            f"oci:{src}:v1",
            f"docker://{host}/bob/app:v1",
            check=False,
        )
        assert denied.returncode != 0
        assert "unauthorized" in denied.stderr.lower() or "denied" in denied.stderr.lower()
        # Anonymous: the reference registry asks our realm, gets an empty grant, refuses.
        r = httpx.get(f"http://{host}/v2/alice/app/tags/list")
        assert r.status_code == 401 and challenge(r)["realm"] == f"{ours.url}/auth/token"
        tok = httpx.get(
            f"{ours.url}/auth/token",
            params={"service": "trustyard", "scope": "repository:alice/app:pull"},
            auth=("alice", "alice-pw"),
        ).json()["token"]
        tags = httpx.get(f"http://{host}/v2/alice/app/tags/list", headers=bearer(tok))
        assert tags.status_code == 200 and tags.json()["tags"] == ["v1"]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
        ours.stop()


def test_reference_registry_rejects_seed_000_kid(tmp_path: Path, issuer: AuthServerProcess) -> None:
    """The reference registry refuses a token whose kid hashes the certificate (seed 000), and
    our registry explains the same token."""
    bundle = issuer.data_dir / "auth" / "token-signing" / "cert.pem"
    key_pem = issuer.data_dir / "auth" / "token-signing" / "key.pem"
    cert = next(
        iter(
            __import__("cryptography.x509", fromlist=["x"]).load_pem_x509_certificates(
                bundle.read_bytes()
            )
        )
    )
    key = serialization.load_pem_private_key(key_pem.read_bytes(), None)
    now = int(time.time())
    claims = {
        "iss": "trustyard",
        "sub": "alice",
        "aud": "trustyard",
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "x",
        "access": [],
    }
    wrong = jwt.encode(claims, key, algorithm="ES256", headers={"kid": certificate_der_kid(cert)})  # type: ignore[arg-type]
    proc, host, log = start_reference(tmp_path, f"{issuer.url}/auth/token", bundle)
    try:
        assert httpx.get(f"http://{host}/v2/", headers=bearer(wrong)).status_code == 401
        assert "token signed by untrusted key with ID" in log.read_text()
        r = httpx.get(f"{issuer.url}/v2/", headers=bearer(wrong))
        assert r.status_code == 401
        message = r.json()["errors"][0]["message"]
        assert "computed over the whole certificate DER" in message
        assert libtrust_kid(cert.public_key()) in message  # type: ignore[arg-type]
        right = jwt.encode(
            claims, key, algorithm="ES256", headers={"kid": libtrust_kid(cert.public_key())}
        )  # type: ignore[arg-type]
        assert httpx.get(f"http://{host}/v2/", headers=bearer(right)).status_code == 200
        assert httpx.get(f"{issuer.url}/v2/", headers=bearer(right)).status_code == 200
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)


def test_our_registry_trusts_a_separate_issuer(tmp_path: Path) -> None:
    """Seed 000's layout: an external token server with its own key; the registry holds only the
    certificate bundle. Tokens are minted here as that issuer would, kid in libtrust form."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed_certificate(key, "thinknode.dev")
    bundle = tmp_path / "bundle.crt"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    server = AuthServerProcess(
        tmp_path / "data",
        extra_env={
            "TRUSTYARD_AUTH__MODE": "token",
            "TRUSTYARD_AUTH__TOKEN__ISSUE": "false",
            "TRUSTYARD_AUTH__TOKEN__REALM": "https://thinknode.dev:3061/v2/token/",
            "TRUSTYARD_AUTH__TOKEN__SERVICE": "thinknode.dev:5243",
            "TRUSTYARD_AUTH__TOKEN__ISSUER": "thinknode.dev:3061",
            "TRUSTYARD_AUTH__TOKEN__ROOTCERTBUNDLE": str(bundle),
        },
    ).start()
    try:
        r = httpx.get(f"{server.url}/v2/team/app/tags/list")
        ch = challenge(r)
        assert ch["realm"] == "https://thinknode.dev:3061/v2/token/"
        assert ch["service"] == "thinknode.dev:5243"
        assert httpx.get(f"{server.url}/auth/token").status_code == 404, "issuer is off"
        now = int(time.time())

        def mint(kid: str, **extra: object) -> str:
            claims = {
                "iss": "thinknode.dev:3061",
                "sub": "kyle",
                "aud": "thinknode.dev:5243",
                "exp": now + 300,
                "nbf": now,
                "iat": now,
                "jti": "1",
                "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}],
            }
            claims.update(extra)
            return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})

        good = mint(libtrust_kid(key.public_key()))
        assert (
            httpx.get(f"{server.url}/v2/team/app/tags/list", headers=bearer(good)).status_code
            == 404
        )
        # The seed's bug: kid = libtrust form of sha256(certificate DER).
        der = cert.public_bytes(serialization.Encoding.DER)
        b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
        seed_kid = ":".join(b32[i : i + 4] for i in range(0, 48, 4))
        r = httpx.get(f"{server.url}/v2/team/app/tags/list", headers=bearer(mint(seed_kid)))
        assert r.status_code == 401
        assert challenge(r)["error"] == "invalid_token"
        msg = r.json()["errors"][0]["message"]
        assert seed_kid in msg and libtrust_kid(key.public_key()) in msg
        assert "public key (DER SubjectPublicKeyInfo)" in msg
        assert "computed over the whole certificate DER" in server.log()
        wrong_aud = mint(libtrust_kid(key.public_key()), aud="trustyard")
        r = httpx.get(f"{server.url}/v2/team/app/tags/list", headers=bearer(wrong_aud))
        assert r.status_code == 401 and "service=thinknode.dev:5243" in r.text
        assert json.dumps(r.json())  # well-formed error body
    finally:
        server.stop()
