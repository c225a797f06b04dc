"""Nested delegations made with the real `notary` client, then narrowed by the owner: the
delegate of `targets/a/b` cannot sign outside what `targets/a` still holds, neither with the
real client nor with an upload crafted and signed with its own (real, imported) key."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.server import ServerProcess
from tests.integration.test_trust_notary import Notary, make_file
from trustyard.crypto.notary_keys import PrivateKey, b64, canonical_json
from trustyard.trust.model import format_time

pytestmark = [pytest.mark.needs_notary, pytest.mark.slow]

GUN = "127.0.0.1/chain/notary"


def delegate_key(d: Path, name: str) -> tuple[PrivateKey, Path, Path]:
    """An ECDSA key (PEM) and a self-signed certificate for it, as a delegate would bring."""
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    pem, crt = d / f"{name}.key", d / f"{name}.crt"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return PrivateKey("ecdsa", key), pem, crt


def tuf(srv: ServerProcess, role: str) -> bytes:
    r = httpx.get(f"{srv.url}/v2/{GUN}/_trust/tuf/{role}.json", timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def crafted(srv: ServerProcess, key: PrivateKey, targets: dict[str, bytes]) -> httpx.Response:
    """targets/a/b's next version naming `targets`, signed with b's key under the key ID that
    targets/a delegates to it (the notary-made x509 key)."""
    a = json.loads(tuf(srv, "targets/a"))["signed"]
    (entry,) = [r for r in a["delegations"]["roles"] if r["name"] == "targets/a/b"]
    current = json.loads(tuf(srv, "targets/a/b"))["signed"]
    body: dict[str, Any] = {
        "_type": "Targets",
        "delegations": {"keys": {}, "roles": []},
        "expires": format_time(dt.datetime.now(dt.UTC) + dt.timedelta(days=30)),
        "targets": {
            name: {"hashes": {"sha256": b64(hashlib.sha256(data).digest())}, "length": len(data)}
            for name, data in targets.items()
        },
        "version": current["version"] + 1,
    }
    sig = {
        "keyid": entry["keyids"][0],
        "method": "ecdsa",
        "sig": b64(key.sign(canonical_json(body))),
    }
    data = json.dumps({"signed": body, "signatures": [sig]}).encode()
    return httpx.post(
        f"{srv.url}/v2/{GUN}/_trust/tuf/",
        files=[("files", ("targets/a/b", data, "application/octet-stream"))],
        timeout=30,
    )


def test_a_nested_delegate_cannot_outgrow_its_narrowed_parent(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        owner = Notary(srv, tmp_path / "owner")
        a_holder, b_holder = Notary(srv, tmp_path / "a"), Notary(srv, tmp_path / "b")
        _, a_pem, a_crt = delegate_key(tmp_path / "keys", "a")
        b_key, b_pem, b_crt = delegate_key(tmp_path / "keys", "b")
        owner.run("init", GUN, "-p")
        owner.run("key", "rotate", GUN, "snapshot", "--server-managed")
        owner.run("delegation", "add", GUN, "targets/a", str(a_crt), "--all-paths", "-p")
        a_holder.run("key", "import", str(a_pem), "--role", "targets/a")
        a_holder.run("delegation", "add", GUN, "targets/a/b", str(b_crt), "--all-paths", "-p")
        b_holder.run("key", "import", str(b_pem), "--role", "targets/a/b")
        payload = make_file(tmp_path, "payload", b"payload\n")
        b_holder.run("add", GUN, "x/1", str(payload), "--roles", "targets/a/b", "-p")
        assert "x/1" in Notary(srv, tmp_path / "fresh1").run("list", GUN)

        # The owner narrows targets/a to "a/"; b's own entry in a still says "everything".
        owner.run("delegation", "remove", GUN, "targets/a", "--all-paths", "-y")
        owner.run("delegation", "add", GUN, "targets/a", "--paths", "a/", "-p")
        stored_b = tuf(srv, "targets/a/b")
        # The real client refuses locally; a crafted upload with b's real key is refused by the
        # server, inside a's new paths too (b's "" is not within "a/": dropped, as notary does).
        b_holder.run("add", GUN, "evil", str(payload), "--roles", "targets/a/b", "-p", check=False)
        b_holder.run("reset", GUN, "--all")  # drop the refused change from b's changelist
        for names in (["evil"], ["a/evil"], ["x/1", "x/2"]):
            r = crafted(srv, b_key, {n: b"x" for n in names})
            assert r.status_code == 400, r.text
            err = r.json()["errors"][0]
            assert err["code"] == "INVALID_UPDATE" and err["detail"]["Name"] == "ErrBadTargets"
            assert "outside its delegated paths" in err["detail"]["Error"]["Msg"]
        assert tuf(srv, "targets/a/b") == stored_b
        assert "evil" not in Notary(srv, tmp_path / "fresh2").run("list", GUN)

        # a narrows b to what a holds; b then publishes inside it, with the client and crafted.
        # (notary's client keeps b's old "x/1", now outside, in what it signs: it may stay as
        # it was, since clients ignore it and notary cannot remove it.)
        a_holder.run("delegation", "remove", GUN, "targets/a/b", "--all-paths", "-y")
        a_holder.run("delegation", "add", GUN, "targets/a/b", "--paths", "a/b/", "-p")
        b_holder.run("add", GUN, "a/b/1", str(payload), "--roles", "targets/a/b", "-p")
        assert "a/b/1" in Notary(srv, tmp_path / "fresh3").run("list", GUN)
        assert crafted(srv, b_key, {"a/b/2": b"2"}).status_code == 200
        assert crafted(srv, b_key, {"a/c/1": b"2"}).status_code == 400
    finally:
        srv.stop()
