"""`trustyard trust` against a real `trustyard serve`, cross-checked with the real notary client."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import ServerProcess
from tests.integration.trusttools import (
    expired_ca,
    issue_root,
    make_ca,
    notary,
    push,
    trust,
)

pytestmark = [pytest.mark.needs_notary, pytest.mark.needs_openssl, pytest.mark.slow]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("tc") / "data").start()
    yield s
    s.stop()


def test_init_sign_verify_moved_tag_and_notary_reads_it(srv: ServerProcess, tmp_path: Path) -> None:
    repo, owner = "flow/app", tmp_path / "owner"
    gun = f"{srv.host}/{repo}"
    digest = push(srv, repo, "v1", "one")
    out = trust(srv, owner, "init", gun)
    assert "root_canonical" in out
    trust(srv, owner, "sign", f"{gun}:v1")
    out = trust(srv, owner, "verify", f"{gun}:v1")
    assert digest in out and "targets" in out
    # the real notary client verifies what we published and lists the same digest
    assert digest.split(":")[1] in notary(srv, tmp_path / "notary", "list", gun)
    # the tag moves after signing: verify says so, inspect shows the mismatch
    moved = push(srv, repo, "v1", "two")
    out = trust(srv, owner, "verify", f"{gun}:v1", ok=False)
    assert "moved after signing" in out and moved in out
    report = json.loads(trust(srv, owner, "inspect", f"{gun}:v1", "--json"))
    assert report["verified"] is False
    assert report["signatures"][0]["digest"] == digest
    trust(srv, owner, "unsign", f"{gun}:v1")
    assert "is not signed" in trust(srv, owner, "verify", f"{gun}:v1", ok=False)


def test_a_key_per_pusher_and_revoking_one(srv: ServerProcess, tmp_path: Path) -> None:
    repo = "flow/delegated"
    gun = f"{srv.host}/{repo}"
    owner, alice, bob = tmp_path / "owner", tmp_path / "alice", tmp_path / "bob"
    trust(srv, owner, "init", gun, "--server-managed-snapshot")
    trust(srv, alice, "key", "generate", "alice", "-o", str(tmp_path))
    trust(srv, bob, "key", "generate", "bob", "-o", str(tmp_path))
    assert "give --paths" in trust(
        srv, owner, "delegation", "add", gun, "releases", "--key", str(tmp_path / "alice.crt"),
        ok=False,
    )  # fmt: skip
    trust(
        srv, owner, "delegation", "add", gun, "releases", "--all-paths",
        "--key", str(tmp_path / "alice.crt"), "--key", str(tmp_path / "bob.crt"),
    )  # fmt: skip
    digest = push(srv, repo, "v1", "alice")
    assert "targets/releases" in trust(srv, alice, "sign", f"{gun}:v1")
    report = json.loads(trust(srv, bob, "inspect", f"{gun}:v1", "--json"))
    assert report["verified"] and report["signatures"][0]["role"] == "targets/releases"
    # the owner revokes bob's key only
    bob_id = json.loads(trust(srv, owner, "audit", gun, "--json"))["collections"][0]["signers"]
    bob_key = next(s for s in bob_id if s["role"] == "targets/releases")["keys"]
    assert len(bob_key) == 2
    bob_cert_id = trust(srv, bob, "key", "import", str(tmp_path / "bob.crt"), "--gun", "x/y")
    bob_canonical = bob_cert_id.split()[-3]
    trust(srv, owner, "delegation", "remove", gun, "releases", "--key-id", bob_canonical)
    push(srv, repo, "v2", "bob")
    assert "holds no key" in trust(srv, bob, "sign", f"{gun}:v2", ok=False)
    trust(srv, alice, "sign", f"{gun}:v2")  # alice is untouched
    assert digest in trust(srv, owner, "verify", f"{gun}:v1")
    assert "targets/releases" in notary(srv, tmp_path / "n", "delegation", "list", gun)


def test_pinned_ca_refuses_seed_001_attack_tofu_accepts(srv: ServerProcess, tmp_path: Path) -> None:
    team = f"{srv.host}/pinned/"
    gun, evil = team + "app", team + "evil"
    ca = make_ca(tmp_path)
    root_key, root_cert = issue_root(tmp_path, ca, gun)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"trust_pinning": {"ca": {team: str(ca[1])}, "disable_tofu": True}})
    )
    owner = tmp_path / "owner"
    trust(srv, owner, "init", gun, "--root-key", str(root_key), "--root-cert", str(root_cert))
    digest = push(srv, "pinned/app", "v1", "pinned")
    trust(srv, owner, "sign", f"{gun}:v1")
    pinned = tmp_path / "pinned-client"
    assert "ca" in trust(srv, pinned, "inspect", f"{gun}:v1", config=config)
    # seed 001: another user publishes trust data for a new GUN with their own root
    trust(srv, tmp_path / "attacker", "init", evil)
    push(srv, "pinned/evil", "v1", "evil")
    trust(srv, tmp_path / "attacker", "sign", f"{evil}:v1")
    out = trust(srv, pinned, "verify", f"{evil}:v1", config=config, ok=False)
    assert "not issued by the CA pinned" in out
    assert "verified" in trust(srv, tmp_path / "tofu-client", "verify", f"{evil}:v1")  # TOFU
    # no pin at all for a GUN, TOFU disabled: refused with how to pin
    other = f"{srv.host}/unpinned/app"
    trust(srv, tmp_path / "o2", "init", other)
    no_pin = tmp_path / "nopin.json"
    no_pin.write_text(json.dumps({"trust_pinning": {"disable_tofu": True}}))
    push(srv, "unpinned/app", "v1", "u")
    out = trust(srv, tmp_path / "c3", "inspect", f"{other}:v1", config=no_pin, ok=False)
    assert "disable_tofu" in out and "trustyard trust key import" in out
    # pinning the root key by import makes it trusted
    cert = json.loads(trust(srv, tmp_path / "o2", "audit", other, "--json"))["collections"][0]
    pin_id = cert["root"]["keys"][0]["canonical_key_id"]
    root_json = httpx.get(f"{srv.url}/v2/{other}/_trust/tuf/root.json").json()
    pem = root_json["signed"]["keys"][cert["root"]["keys"][0]["key_id"]]["keyval"]["public"]
    (tmp_path / "other.pem").write_bytes(base64.b64decode(pem))
    assert pin_id in trust(
        srv, tmp_path / "c3", "key", "import", str(tmp_path / "other.pem"), "--gun", other
    )
    trust(srv, tmp_path / "c3", "inspect", f"{other}:v1", config=no_pin)
    # the real notary client with the same pins: trusts the CA-issued root, refuses the attacker
    ncfg = tmp_path / "notary.json"
    ncfg.write_text(json.dumps({"trust_pinning": {"ca": {team: str(ca[1])}, "disable_tofu": True}}))
    nd = tmp_path / "notary-pinned"
    assert digest.split(":")[1] in notary(srv, nd, "-c", str(ncfg), "list", gun)
    notary(srv, nd, "-c", str(ncfg), "list", evil, ok=False)


def test_bad_input(srv: ServerProcess, tmp_path: Path) -> None:
    gun = f"{srv.host}/bad/app"
    owner = tmp_path / "owner"
    # a certificate whose CN is not the GUN
    ca = make_ca(tmp_path)
    key, cert = issue_root(tmp_path, ca, f"{srv.host}/bad/other")
    out = trust(srv, owner, "init", gun, "--root-key", str(key), "--root-cert", str(cert), ok=False)
    assert "is not the GUN" in out
    (tmp_path / "good").mkdir()
    k2, c2 = issue_root(tmp_path / "good", ca, gun)
    trust(srv, owner, "init", gun, "--root-key", str(k2), "--root-cert", str(c2))
    push(srv, "bad/app", "v1", "bad")
    trust(srv, owner, "sign", f"{gun}:v1")
    # an expired CA: the pinned client refuses the root it issued
    expired = tmp_path / "expired"
    expired.mkdir()
    ekey, ecert = expired / "ca.key", expired / "ca.pem"
    expired_ca(ekey, ecert)
    egun = f"{srv.host}/bad/expired"
    rk, rc = issue_root(expired, (ekey, ecert), egun, days=30)
    trust(srv, tmp_path / "o3", "init", egun, "--root-key", str(rk), "--root-cert", str(rc))
    push(srv, "bad/expired", "v1", "exp")
    trust(srv, tmp_path / "o3", "sign", f"{egun}:v1")
    ecfg = tmp_path / "e.json"
    ecfg.write_text(json.dumps({"trust_pinning": {"ca": {egun: str(ecert)}}}))
    out = trust(srv, tmp_path / "c4", "verify", f"{egun}:v1", config=ecfg, ok=False)
    assert "expired" in out
    # wrong passphrase
    out = trust(
        srv, owner, "sign", f"{gun}:v1", env={"NOTARY_TARGETS_PASSPHRASE": "wrong"}, ok=False
    )
    assert "wrong passphrase for the targets key" in out
    # a delegation key that is not a key
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    out = trust(
        srv, owner, "delegation", "add", gun, "x", "--key", str(junk), "--all-paths", ok=False
    )
    assert "not a valid delegation key" in out
    # unreachable trust server: clear error, nothing published anywhere
    dead = ServerProcess(tmp_path / "dead")
    out = trust(dead, tmp_path / "o4", "init", f"{srv.host}/bad/unreached", ok=False)
    assert "cannot reach the trust server" in out and "nothing was published" in out
    assert (
        httpx.get(f"{srv.url}/v2/{srv.host}/bad/unreached/_trust/tuf/root.json").status_code == 404
    )
    # PKCS#11: no such token, then (with a token) a wrong PIN
    conf = tmp_path / "softhsm2.conf"
    (tmp_path / "tokens").mkdir()
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    out = trust(
        srv, tmp_path / "o5", "init", f"{srv.host}/bad/hsm",
        "--root-key", "pkcs11:token=missing;object=root?pin-value=1234",
        "--root-cert", str(cert), env={"SOFTHSM2_CONF": str(conf)}, ok=False,
    )  # fmt: skip
    assert "no such token" in out
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "hsm", "--pin", "1234",
         "--so-pin", "5678"],
        check=True, capture_output=True, env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )  # fmt: skip
    out = trust(
        srv, tmp_path / "o5", "init", f"{srv.host}/bad/hsm",
        "--root-key", "pkcs11:token=hsm;object=root?pin-value=pin-Wrong",
        "--root-cert", str(cert), env={"SOFTHSM2_CONF": str(conf)}, ok=False,
    )  # fmt: skip
    assert "wrong PIN" in out and "pin-Wrong" not in out


def test_audit_sees_one_root_key_across_owners(srv: ServerProcess, tmp_path: Path) -> None:
    client = tmp_path / "shared-root"
    a, b = f"{srv.host}/audita/app", f"{srv.host}/auditb/app"
    trust(srv, client, "init", a)
    trust(srv, client, "init", b)  # the same root key, a new certificate per GUN
    report = json.loads(trust(srv, client, "audit", f"{srv.host}/audit", "--json"))
    roots = {c["gun"]: c["root"]["keys"][0] for c in report["collections"]}
    assert roots[a]["key_id"] != roots[b]["key_id"]
    assert roots[a]["canonical_key_id"] == roots[b]["canonical_key_id"]
    texts = [f["finding"] for f in report["findings"] if f["gun"] == a]
    assert any("shared across owners audita, auditb" in t for t in texts)
    assert any("not pinned" in t for t in texts)
    table = trust(srv, client, "audit", f"{srv.host}/audit")
    assert roots[a]["canonical_key_id"][:12] in table
