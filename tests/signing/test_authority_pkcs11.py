"""The authority's statements signed by a PKCS#11 key (SoftHSM2): the library and the CLI."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.auth.pki import HOUR, key_usage, make_cert, now
from trustyard.authority.statements import Root, evaluate, issue_grant, parse
from trustyard.crypto.pkcs11 import Pkcs11Signer

from .hsm import Token


def _token_cert(
    signer: Pkcs11Signer, root_key: ec.EllipticCurvePrivateKey, root: x509.Certificate
) -> x509.Certificate:
    public = serialization.load_der_public_key(signer.public_key_der())
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "HSM Authority")]))
        .issuer_name(root.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - HOUR)
        .not_valid_after(now() + 24 * HOUR)
        .add_extension(key_usage(sign=True), critical=True)
        .sign(root_key, hashes.SHA256())
    )


@pytest.mark.parametrize(("obj", "alg"), [("p256", "ES256"), ("root", "ES384")])
def test_token_key_signs_statements(hsm: Token, obj: str, alg: str) -> None:
    root = make_cert("HSM Root", ca=True)
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    signer = Pkcs11Signer.from_uri(hsm.uri(obj))
    cert = _token_cert(signer, root.key, root.cert)
    user = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = user.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    statement = issue_grant(signer, [cert], pem, "carol", ["carol/*"])
    header = json.loads(base64.urlsafe_b64decode(statement.split(b".")[0] + b"=="))
    assert header["alg"] == alg
    graph = evaluate([statement], [Root("hsm.pem", root.cert)], now())
    assert [g.user for g in graph.grants] == ["carol"], graph.refused


def test_cli_grant_with_a_pkcs11_uri(hsm: Token, tmp_path: Path) -> None:
    root = make_cert("HSM Root", ca=True)
    assert isinstance(root.key, ec.EllipticCurvePrivateKey)
    uri = hsm.uri("p256")
    cert = _token_cert(Pkcs11Signer.from_uri(uri), root.key, root.cert)
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "user.pem").write_bytes(make_cert("user").pem)  # a certificate's key works too
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trustyard",
            "authority",
            "grant",
            "--authority-key",
            uri,
            "--authority-cert",
            str(tmp_path / "cert.pem"),
            "--key",
            str(tmp_path / "user.pem"),
            "--user",
            "dave",
            "--namespace",
            "dave/*",
            "--out",
            str(tmp_path / "grant.jws"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    statement = (tmp_path / "grant.jws").read_bytes()
    assert parse(statement).id == out.stdout.strip()
    graph = evaluate([statement], [Root("hsm.pem", root.cert)], now())
    assert [g.user for g in graph.grants] == ["dave"], graph.refused
