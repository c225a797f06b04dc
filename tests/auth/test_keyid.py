"""Key IDs: libtrust against an independent openssl + base32 computation, RFC 7638's own vector,
and `trustyard keyid` explaining seed 000's mistake (kid over the certificate, not the key)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from typer.testing import CliRunner

from trustyard.auth.token_keys import self_signed_certificate
from trustyard.cli.app import app
from trustyard.crypto.keyid import (
    certificate_der_kid,
    explain_kid,
    jwk_thumbprint,
    libtrust_kid,
    load_key_material,
)

runner = CliRunner()


def openssl_libtrust(cert_pem: Path) -> str:
    """libtrust KeyID the long way: openssl extracts the SPKI DER and hashes it."""
    spki = subprocess.run(
        ["openssl", "x509", "-in", str(cert_pem), "-pubkey", "-noout"],
        check=True,
        capture_output=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"],
        input=spki,
        check=True,
        capture_output=True,
    ).stdout
    digest = subprocess.run(
        ["openssl", "dgst", "-sha256", "-binary"], input=der, check=True, capture_output=True
    ).stdout
    b32 = base64.b32encode(digest[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


@pytest.fixture(params=["ec", "rsa", "ed25519"])
def cert_files(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, Path]:
    if request.param == "ec":
        key = ec.generate_private_key(ec.SECP256R1())
    elif request.param == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    cert = self_signed_certificate(key, "keyid-test")  # type: ignore[arg-type]
    cert_pem = tmp_path / "cert.pem"
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_der = tmp_path / "key.der"
    key_der.write_bytes(
        key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    pub_pem = tmp_path / "pub.pem"
    pub_pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return cert_pem, key_der, pub_pem


def test_libtrust_kid_matches_openssl_for_cert_private_and_public_key(
    cert_files: tuple[Path, Path, Path],
) -> None:
    cert_pem = cert_files[0]
    expected = openssl_libtrust(cert_pem)
    assert len(expected) == 59 and expected.count(":") == 11
    for path in cert_files:
        assert load_key_material(path.read_bytes()).kids()["libtrust"] == expected
        out = runner.invoke(app, ["keyid", str(path)])
        assert out.exit_code == 0, out.output
        assert out.output.strip() == expected


def test_rfc7638_thumbprint_matches_the_rfc_example() -> None:
    # RFC 7638 section 3.1: the RSA key and its SHA-256 thumbprint.
    n = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY"
        "368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0f"
        "M4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    e = "AQAB"

    def b64int(s: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)), "big")

    key = rsa.RSAPublicNumbers(b64int(e), b64int(n)).public_key()
    assert jwk_thumbprint(key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_all_prints_both_forms(cert_files: tuple[Path, Path, Path]) -> None:
    cert_pem = cert_files[0]
    loaded = load_key_material(cert_pem.read_bytes())
    out = runner.invoke(app, ["keyid", str(cert_pem), "--all"])
    assert out.exit_code == 0
    assert f"libtrust:  {loaded.kids()['libtrust']}" in out.output
    assert f"rfc7638:   {jwk_thumbprint(loaded.public_key)}" in out.output


def test_seed_000_mistake_is_recognised_and_explained(cert_files: tuple[Path, Path, Path]) -> None:
    cert_pem = cert_files[0]
    loaded = load_key_material(cert_pem.read_bytes())
    assert loaded.certificate is not None
    # What the seed's Node code computed: sha256 over the certificate DER.
    wrong = certificate_der_kid(loaded.certificate)
    cert_der_hash = hashlib.sha256(
        loaded.certificate.public_bytes(serialization.Encoding.DER)
    ).digest()
    assert wrong.replace(":", "") == base64.b32encode(cert_der_hash[:30]).decode()
    assert wrong != libtrust_kid(loaded.public_key)

    out = runner.invoke(app, ["keyid", str(cert_pem), "--expect", wrong])
    assert out.exit_code == 1
    assert "computed over the whole certificate" in out.output
    assert libtrust_kid(loaded.public_key) in out.output

    message = explain_kid(wrong, [loaded.certificate])
    assert message is not None and "SubjectPublicKeyInfo" in message

    ok = runner.invoke(app, ["keyid", str(cert_pem), "--expect", libtrust_kid(loaded.public_key)])
    assert ok.exit_code == 0
    other = runner.invoke(app, ["keyid", str(cert_pem), "--expect", "AAAA:BBBB"])
    assert other.exit_code == 1 and "not a key ID of this certificate" in other.output


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"hello")
    out = runner.invoke(app, ["keyid", str(junk)])
    assert out.exit_code == 2
    assert "not a PEM or DER certificate" in out.output
