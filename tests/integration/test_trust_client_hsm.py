"""Seed 002's flow without the vendor HSM: an openssl CA, the root key in SoftHSM2, a CA-issued
root certificate, a server-managed snapshot, a delegate with its own key signing a pushed image's
digest read with `skopeo inspect --raw`; the real notary client with `trust_pinning.ca` and
`disable_tofu` lists and verifies it, and a client without a pin is refused. Then a root rotation
to a key that is not chained to the pinned CA is refused by the pinned clients."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import require
from tests.integration.server import ServerProcess
from tests.integration.trusttools import make_ca, notary, openssl, push, trust

pytestmark = [
    pytest.mark.needs_notary,
    pytest.mark.needs_openssl,
    pytest.mark.needs_skopeo,
    pytest.mark.slow,
]

# Not hex, so a key ID or digest in the output can never contain it by chance (CI once printed a
# key ID holding "1234", the PIN this used to be).
ORG_PIN = "pin-Qz7w"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("hsm") / "data").start()
    yield s
    s.stop()


def softhsm_token(tmp_path: Path, keys: dict[str, Path]) -> dict[str, str]:
    """A SoftHSM2 token 'org-root' holding the given P-384 keys by label; returns its env."""
    util = require("softhsm2-util")
    (tmp_path / "tokens").mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp_path / 'tokens'}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
    label = ["--token", "org-root"]
    subprocess.run(
        [util, "--init-token", "--free", "--label", "org-root", "--pin", ORG_PIN, "--so-pin", "5678"],
        check=True, capture_output=True, env=env,
    )  # fmt: skip
    for n, (name, key_pem) in enumerate(keys.items(), start=1):
        p8 = tmp_path / f"{name}.p8.pem"
        openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(key_pem), "-out", str(p8))
        subprocess.run(
            [util, "--import", str(p8), *label, "--label", name, "--id", f"{n:02d}", "--pin",
             ORG_PIN],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
        p8.unlink()
        key_pem.unlink()
    return {"SOFTHSM2_CONF": str(conf)}


def ca_issued(tmp_path: Path, ca: tuple[Path, Path], key: Path, cn: str) -> Path:
    csr, cert = tmp_path / f"{key.stem}.csr", tmp_path / f"{key.stem}.pem"
    subj = "/CN=" + cn.replace("/", "\\/")
    openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", subj)
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-out", str(cert), "-days", "365",
    )  # fmt: skip
    return cert


def test_seed_002_flow_with_hsm_root_and_pinned_ca(srv: ServerProcess, tmp_path: Path) -> None:
    gun = f"{srv.host}/org/app"
    ca = make_ca(tmp_path, "org")
    root_key = tmp_path / "hsmroot.key"  # made outside, imported into the token, then deleted
    openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(root_key))
    root_cert = ca_issued(tmp_path, ca, root_key, gun)
    targets_key = tmp_path / "hsmtargets.key"
    openssl("ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(targets_key))
    hsm = softhsm_token(tmp_path, {"root": root_key, "targets": targets_key})
    # the targets key's PIN comes from NOTARY_TARGETS_PASSPHRASE, as Notary asks for a token PIN
    hsm["NOTARY_TARGETS_PASSPHRASE"] = ORG_PIN
    uri = f"pkcs11:token=org-root;object=root?pin-value={ORG_PIN}"
    owner = tmp_path / "owner"
    out = trust(
        srv, owner, "init", gun, "--root-key", uri, "--root-cert", str(root_cert),
        "--targets-key", "pkcs11:token=org-root;object=targets", "--server-managed-snapshot",
        env=hsm,
    )  # fmt: skip
    assert ORG_PIN not in out
    stored = [json.loads(p.read_text()) for p in (owner / "private").glob("*.json")]
    assert [k["pkcs11"] for k in stored] == ["pkcs11:token=org-root;object=targets"]
    assert not list((owner / "private").glob("*.key")) or all(
        json.loads(p.with_suffix(".json").read_text())["role"] != "root"
        for p in (owner / "private").glob("*.key")
    )  # the root key never left the token
    # a delegate with its own key
    delegate = tmp_path / "delegate"
    trust(srv, delegate, "key", "generate", "ci", "-o", str(tmp_path))
    trust(
        srv, owner, "delegation", "add", gun, "releases", "--key", str(tmp_path / "ci.crt"),
        "--paths", "v", env=hsm,
    )  # fmt: skip
    digest = push(srv, "org/app", "v1", "seed002")
    raw = subprocess.run(
        [require("skopeo"), "inspect", "--tls-verify=false", "--raw", f"docker://{gun}:v1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    trust(srv, delegate, "sign", f"{gun}:v1", "--digest", digest, "--size", str(len(raw)))
    # the real notary client, pinned to the CA, TOFU disabled
    cfg = tmp_path / "notary.json"
    cfg.write_text(json.dumps({"trust_pinning": {"ca": {gun: str(ca[1])}, "disable_tofu": True}}))
    nd = tmp_path / "notary"
    listing = notary(srv, nd, "-c", str(cfg), "list", gun)
    assert digest.split(":")[1] in listing and "targets/releases" in listing
    proc = subprocess.run(
        [require("notary"), "-s", srv.url, "-d", str(nd), "-c", str(cfg), "verify", gun, "v1"],
        input=raw, capture_output=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout == raw, proc.stderr.decode()
    ours = trust(srv, tmp_path / "pinned", "verify", f"{gun}:v1", config=cfg)
    assert "targets/releases" in ours
    # a fresh client without a pin (TOFU disabled) is refused, ours and notary
    nopin = tmp_path / "nopin.json"
    nopin.write_text(json.dumps({"trust_pinning": {"disable_tofu": True}}))
    assert "pin it" in trust(srv, tmp_path / "fresh", "verify", f"{gun}:v1", config=nopin, ok=False)
    notary(srv, tmp_path / "n2", "-c", str(nopin), "list", gun, ok=False)

    # root rotation (signed by the HSM root) to a self-signed key: the pinned clients refuse it
    trust(srv, owner, "key", "rotate", gun, "root", "--old-root-key", uri, env=hsm)
    out = trust(srv, tmp_path / "pinned", "verify", f"{gun}:v1", config=cfg, ok=False)
    assert "not issued by the CA pinned" in out
    # a client that trusted the old root without pins follows the properly signed rotation
    assert "verified" in trust(srv, owner, "verify", f"{gun}:v1")


def test_notary_writes_trustyard_reads(srv: ServerProcess, tmp_path: Path) -> None:
    gun = f"{srv.host}/fromnotary/app"
    nd = tmp_path / "notary"
    notary(srv, nd, "init", gun, "-p")
    digest = push(srv, "fromnotary/app", "v1", "nw")
    hexd = digest.split(":")[1]
    raw = subprocess.run(
        [require("skopeo"), "inspect", "--tls-verify=false", "--raw", f"docker://{gun}:v1"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    notary(srv, nd, "addhash", gun, "v1", str(len(raw)), "--sha256", hexd, "-p")
    out = trust(srv, tmp_path / "ours", "verify", f"{gun}:v1")
    assert digest in out and "targets" in out
    audit = json.loads(trust(srv, tmp_path / "ours", "audit", gun, "--json"))
    assert audit["collections"][0]["root"]["keys"][0]["keytype"] == "ecdsa-x509"
