"""Helpers for the trust client tests: run `trustyard trust` and `notary`, make CAs and roots."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.conftest import require
from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess

PASSPHRASES = {
    "NOTARY_ROOT_PASSPHRASE": "root-pass",
    "NOTARY_TARGETS_PASSPHRASE": "targets-pass",
    "NOTARY_SNAPSHOT_PASSPHRASE": "snapshot-pass",
    "NOTARY_DELEGATION_PASSPHRASE": "delegation-pass",
}


def trust(
    srv: ServerProcess,
    trust_dir: Path,
    *args: str,
    ok: bool = True,
    env: dict[str, str] | None = None,
    config: Path | None = None,
) -> str:
    cmd = [sys.executable, "-m", "trustyard", "trust", "-d", str(trust_dir), "-s", srv.url]
    cmd += ["--plain-http", *(["-c", str(config)] if config else []), *args]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        env={**os.environ, **PASSPHRASES, **(env or {})},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert "PRIVATE KEY" not in out and "root-pass" not in out  # secrets never printed
    assert (proc.returncode == 0) == ok, f"trust {' '.join(args)} -> {proc.returncode}:\n{out}"
    return out


def notary(srv: ServerProcess, trust_dir: Path, *args: str, ok: bool = True) -> str:
    proc = subprocess.run(
        [require("notary"), "-s", srv.url, "-d", str(trust_dir), *args],
        capture_output=True,
        env={**os.environ, **PASSPHRASES},
        timeout=120,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert (proc.returncode == 0) == ok, f"notary {' '.join(args)}:\n{out}"
    return out


def push(srv: ServerProcess, repo: str, tag: str, seed: str) -> str:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        return push_image(c, repo, make_image(seed=seed), tag)


def openssl(*args: str) -> None:
    subprocess.run([require("openssl"), *args], check=True, capture_output=True)


def make_ca(d: Path, name: str = "ca", days: int = 30) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    openssl(
        "req", "-new", "-x509", "-key", str(key), "-out", str(cert), "-days", str(days),
        "-subj", f"/CN={name} org CA",
    )  # fmt: skip
    return key, cert


def issue_root(d: Path, ca: tuple[Path, Path], cn: str, days: int = 30) -> tuple[Path, Path]:
    """A root key (PEM) and a certificate for it with CN = GUN issued by the CA."""
    key, csr, cert = d / "root.key", d / "root.csr", d / "root.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    openssl(
        "req", "-new", "-key", str(key), "-out", str(csr), "-subj", "/CN=" + cn.replace("/", "\\/")
    )
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
        "-CAcreateserial", "-out", str(cert), "-days", str(days),
    )  # fmt: skip
    return key, cert


def expired_ca(key_path: Path, cert_path: Path) -> None:
    """A CA certificate valid only in 2020 (openssl 3.0's `req` cannot backdate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2021, 1, 1, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
