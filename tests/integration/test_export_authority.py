"""Issue 20 parts together: a static export carries the authority statements and a JWS-signed
schema 1 manifest, and the clients verify them from plain nginx: `trustyard verify
--authority-roots` (statements fetched from the static URL, or offline after `authority fetch`),
skopeo pulling the schema 1 image by its Distribution digest; a tampered statement is refused."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.pki import make_cert
from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.exporttools import Nginx, exported
from tests.integration.images import make_image, push_blob, push_image
from tests.integration.server import ServerProcess, free_port
from tests.jws_sign import Key, manifest_body, sign_pretty
from trustyard.oci import mediatypes as mt
from trustyard.oci.schema1 import manifest_digest
from trustyard.signing import cosign

pytestmark = [pytest.mark.integration, pytest.mark.needs_skopeo, pytest.mark.slow]


def trustyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *args],
        capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})},
        check=False,
    )  # fmt: skip


def test_authority_and_schema1_verify_from_plain_nginx(tmp_path: Path) -> None:
    skopeo = require("skopeo")
    require("nginx")
    srv = ServerProcess(tmp_path / "data", extra_env={"TRUSTYARD_SCHEMA1": "verify"}).start()
    dest, port = tmp_path / "site", free_port()
    nginx = Nginx(dest, tmp_path / "nginx", port)
    try:
        # The authority: root (the client's choice) -> statements certificate.
        ca = make_cert("Export Authority Root", ca=True)
        leaf = ca.issue("Export Authority Statements")
        (tmp_path / "authority.key").write_bytes(leaf.key_pem())
        (tmp_path / "authority.pem").write_bytes(leaf.pem)
        roots = tmp_path / "roots"
        roots.mkdir()
        (roots / "corp.pem").write_bytes(ca.pem)
        alice = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "alice.key").write_bytes(cosign.encrypt_cosign_key(alice, b"pw"))
        (tmp_path / "alice.pub").write_bytes(cosign.public_pem(alice.public_key()))
        jws_key = Key(ec.generate_private_key(ec.SECP256R1()))
        (tmp_path / "jws.pub").write_bytes(
            jws_key.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        authority = (
            "--authority-key",
            str(tmp_path / "authority.key"),
            "--authority-cert",
            str(tmp_path / "authority.pem"),
            "--registry",
            srv.url,
        )
        for user, pub in (("alice", "alice.pub"), ("builder", "jws.pub")):
            granted = trustyard("authority", "grant", "--key", str(tmp_path / pub), "--user", user,
                                "--namespace", "team/*", *authority)  # fmt: skip
            assert granted.returncode == 0, granted.stderr

        # An OCI image signed with cosign by alice, and a schema 1 image signed by the builder.
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            image = make_image(1, seed="exp-authority")
            push_image(c, "team/app", image, "v1")
            layer = gzip.compress(b"schema 1 layer", mtime=0)
            blob = push_blob(c, "team/old", layer)
            raw = sign_pretty(manifest_body("team/old", [blob]), [jws_key])
            put = c.put("/v2/team/old/manifests/v1", content=raw,
                        headers={"Content-Type": mt.DOCKER_SCHEMA1_SIGNED})  # fmt: skip
            assert put.status_code == 201, put.text
        old_digest = str(manifest_digest(raw))
        signed = trustyard("sign", "cosign", f"{srv.host}/team/app:v1", "--key",
                           str(tmp_path / "alice.key"), "--mode", "tag", "--plain-http",
                           env={"COSIGN_PASSWORD": "pw"})  # fmt: skip
        assert signed.returncode == 0, signed.stderr

        exported(dest, srv.data_dir, "--listen", f"127.0.0.1:{port}", "--signatures")
        statements = dest / "extensions/v2/_authority/statements"
        assert len(json.loads(statements.read_bytes())["statements"]) == 2
        nginx.start()

        # trustyard verify against the static host: statements and signatures from nginx.
        def verify(ref: str, *extra: str) -> subprocess.CompletedProcess[str]:
            return trustyard("verify", f"{nginx.host}/{ref}", "--authority-roots", str(roots),
                             "--plain-http", *extra)  # fmt: skip

        ok = verify("team/app:v1")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "granted to alice for team/*" in ok.stdout
        old = verify("team/old:v1", "--json")
        assert old.returncode == 0, old.stdout + old.stderr
        rows = json.loads(old.stdout)
        assert [(r["kind"], r["user"]) for r in rows if r["authorized"]] == [("jws", "builder")]

        # Offline: fetch once from the static URL, then verify with --statements.
        fetched = tmp_path / "statements"
        got = trustyard("authority", "fetch", "--registry", nginx.url, "--out", str(fetched))
        assert got.returncode == 0, got.stderr
        offline = verify("team/app:v1", "--statements", str(fetched))
        assert offline.returncode == 0, offline.stdout + offline.stderr

        # skopeo pulls the schema 1 image from nginx, checking Distribution's digest.
        inspected = run(skopeo, "inspect", "--raw", "--tls-verify=false",
                        f"docker://{nginx.host}/team/old@{old_digest}")  # fmt: skip
        assert inspected.stdout.encode().rstrip() == raw.rstrip()
        run(skopeo, "copy", "--policy", str(_accept_all(tmp_path)), "--src-tls-verify=false",
            f"docker://{nginx.host}/team/old:v1", f"dir:{tmp_path / 'old'}")  # fmt: skip

        # A tampered statement (alice's grant widened to every namespace) is refused.
        doc = json.loads(statements.read_bytes())
        doc["statements"] = [_widen(s) for s in doc["statements"]]
        statements.write_text(json.dumps(doc))
        refused = verify("team/app:v1")
        assert refused.returncode != 0, refused.stdout
        assert "authorized" in (refused.stdout + refused.stderr)
    finally:
        nginx.stop()
        srv.stop()


def _accept_all(tmp_path: Path) -> Path:
    path = tmp_path / "accept.json"
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def _widen(statement: str) -> str:
    """The same JWS with its payload's namespaces replaced (the signature no longer matches)."""
    import base64

    head, payload, sig = statement.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if "namespaces" in body:
        body["namespaces"] = ["*"]
    encoded = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    return f"{head}.{encoded}.{sig}"
