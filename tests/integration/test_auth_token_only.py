"""`trustyard serve --only token`: the token issuer alone, trusted by a separate registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import jwt

from tests.auth.integration import (
    AuthServerProcess,
    add_user,
    bearer,
    challenge,
    cli,
    fetch_token,
    token_issuer,
)

ALICE = ("alice", "alice-pw")


def test_only_token_serves_the_issuer_and_nothing_else(tmp_path: Path) -> None:
    data = tmp_path / "issuer"
    add_user(data, *ALICE)
    issuer = token_issuer(data).start()  # no TRUSTYARD_AUTH__MODE: --only token implies it
    try:
        r = fetch_token(issuer, "repository:alice/app:pull,push", auth=ALICE)
        assert r.status_code == 200, r.text
        claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
        assert claims["sub"] == "alice" and claims["aud"] == "trustyard"
        assert claims["access"] == [
            {"type": "repository", "name": "alice/app", "actions": ["pull", "push"]}
        ]
        assert httpx.get(f"{issuer.url}/auth/jwks.json").json()["keys"]
        # No registry, trust or extension routes, and no registry challenge for /v2/.
        for path in ("/v2/", "/v2/alice/app/tags/list", "/v2/alice/app/_trust/tuf/root.json"):
            r = httpx.get(issuer.url + path, headers={"Authorization": "Bearer x"})
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert "www-authenticate" not in r.headers
        assert not (data / "storage").exists()  # the blob store was never opened
        assert '"routes": ["token"]' in issuer.log() or '"routes":["token"]' in issuer.log()
    finally:
        issuer.stop()


def test_registry_trusts_a_separate_token_only_issuer(tmp_path: Path) -> None:
    """The split deployment: issuer and registry in two processes, trust through cert.pem."""
    issuer_data = tmp_path / "issuer"
    add_user(issuer_data, *ALICE)
    add_user(issuer_data, "bob", "bob-pw")
    issuer = token_issuer(issuer_data).start()
    cert = issuer_data / "auth" / "token-signing" / "cert.pem"
    registry = AuthServerProcess(
        tmp_path / "registry",
        extra_env={
            "TRUSTYARD_AUTH__MODE": "token",
            "TRUSTYARD_AUTH__TOKEN__ISSUE": "false",
            "TRUSTYARD_AUTH__TOKEN__REALM": f"{issuer.url}/auth/token",
            "TRUSTYARD_AUTH__TOKEN__ROOTCERTBUNDLE": str(cert),
        },
    )
    try:
        assert cert.exists()
        registry.start()
        r = httpx.get(f"{registry.url}/v2/alice/app/tags/list")
        assert r.status_code == 401
        assert challenge(r)["realm"] == f"{issuer.url}/auth/token"
        # The registry itself issues nothing.
        assert httpx.get(f"{registry.url}/auth/token").status_code == 404
        alice = fetch_token(issuer, "repository:alice/app:pull,push", auth=ALICE).json()["token"]
        r = httpx.post(f"{registry.url}/v2/alice/app/blobs/uploads/", headers=bearer(alice))
        assert r.status_code == 202, r.text
        bob = fetch_token(issuer, "repository:alice/app:pull,push", auth=("bob", "bob-pw"))
        r = httpx.post(
            f"{registry.url}/v2/alice/app/blobs/uploads/", headers=bearer(bob.json()["token"])
        )
        assert r.status_code == 403 and challenge(r)["error"] == "insufficient_scope"
    finally:
        registry.stop()
        issuer.stop()


def test_only_token_refuses_another_auth_mode(tmp_path: Path) -> None:
    cli(tmp_path / "data", "acl", "add", "anonymous", "x/*", "pull")  # creates the metadata store
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")}
    env["TRUSTYARD_AUTH__MODE"] = "htpasswd"
    data = ["--data-dir", str(tmp_path / "data")]
    proc = subprocess.run(
        [sys.executable, "-m", "trustyard", "serve", "--only", "token", "--port", "1", *data],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "auth.mode = 'token'" in proc.stderr and "'htpasswd'" in proc.stderr
