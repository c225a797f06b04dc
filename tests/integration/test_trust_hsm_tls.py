"""SoftHSM2 root and targets keys (P-256 and P-384) with a trust server over TLS.

Issue 19 item 4: the PKCS#11 module shares Python's libcrypto and left an error on OpenSSL's
per-thread error queue after a token signature; the next read of a pooled TLS connection then
failed with `ReadError [ENGINE: NO_SUCH_ENGINE]`. Item 3: P-256 token roots (Notary's own HSM
roots) were refused. Here `trust init`, `trust sign` and `trust verify` all run over https with
every key in the token.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess
from tests.integration.test_trust_client_hsm import ORG_PIN, ca_issued, softhsm_token
from tests.integration.trusttools import PASSPHRASES, make_ca, openssl

pytestmark = [pytest.mark.needs_openssl, pytest.mark.slow]


@pytest.fixture(scope="module")
def tls_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    d = tmp_path_factory.mktemp("hsm-tls")
    key, cert = d / "tls.key", d / "tls.pem"
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
    )  # fmt: skip
    s = ServerProcess(d / "data", tls=(cert, key)).start()
    yield s
    s.stop()


def trust_tls(srv: ServerProcess, trust_dir: Path, *args: str, env: dict[str, str]) -> str:
    assert srv.tls is not None
    cmd = [sys.executable, "-m", "trustyard", "trust", "-d", str(trust_dir), "-s", srv.url]
    config = trust_dir.parent / "trust-tls.json"  # the trust server's CA, Notary's way
    config.write_text(json.dumps({"remote_server": {"root_ca": str(srv.tls[0])}}))
    cmd += ["-c", str(config), "--tls-ca", str(srv.tls[0]), *args]
    proc = subprocess.run(
        cmd, capture_output=True, env={**PASSPHRASES, **env}, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, f"trust {' '.join(args)} -> {proc.returncode}:\n{out}"
    assert ORG_PIN not in out  # the PIN is never printed
    return out


@pytest.mark.parametrize("curve", ["prime256v1", "secp384r1"])
def test_token_keys_over_tls(tls_srv: ServerProcess, tmp_path: Path, curve: str) -> None:
    import os

    name = "p256" if curve == "prime256v1" else "p384"
    keys = {}
    for role in ("root", "targets"):
        keys[role] = tmp_path / f"{role}.key"
        openssl("ecparam", "-name", curve, "-genkey", "-noout", "-out", str(keys[role]))
    gun = f"{tls_srv.host}/hsm-tls/{name}"
    root_cert = ca_issued(tmp_path, make_ca(tmp_path, "org"), keys["root"], gun)
    env = {**os.environ, **softhsm_token(tmp_path, keys), "NOTARY_TARGETS_PASSPHRASE": ORG_PIN}
    owner = tmp_path / "owner"
    trust_tls(
        tls_srv, owner, "init", gun, "--root-key", f"pkcs11:token=org-root;object=root?pin-value={ORG_PIN}",
        "--root-cert", str(root_cert),        "--targets-key", "pkcs11:token=org-root;object=targets", env=env,
    )  # fmt: skip
    stored = [json.loads(p.read_text()) for p in (owner / "private").glob("*.json")]
    assert {k.get("pkcs11") for k in stored} >= {"pkcs11:token=org-root;object=targets"}
    with httpx.Client(base_url=tls_srv.url, timeout=30, verify=tls_srv.verify) as c:
        digest = push_image(c, f"hsm-tls/{name}", make_image(seed=name), "v1")
        size = len(c.get(f"/v2/hsm-tls/{name}/manifests/v1", headers={"Accept": "*/*"}).content)
    # publishing signs targets (in the token) and then reads and writes over the same pool
    trust_tls(tls_srv, owner, "sign", f"{gun}:v1", "--digest", digest, "--size", str(size), env=env)
    out = trust_tls(tls_srv, tmp_path / "reader", "verify", f"{gun}:v1", env=dict(os.environ))
    assert digest in out
    audit = json.loads(trust_tls(tls_srv, owner, "audit", gun, "--json", env=env))
    assert audit["collections"][0]["root"]["keys"][0]["keytype"] == "ecdsa-x509"
