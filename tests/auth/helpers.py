"""Keys, certificates and hand-made tokens for the auth tests."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trustyard.auth.keyring import TrustedKeys
from trustyard.auth.token_keys import SigningKey, self_signed_certificate
from trustyard.auth.token_verifier import TokenVerifier


def new_key(cn: str = "issuer") -> SigningKey:
    key = ec.generate_private_key(ec.SECP256R1())
    return SigningKey(key, (self_signed_certificate(key, cn),))


def ca_and_leaf() -> tuple[SigningKey, x509.Certificate]:
    """A CA certificate and a leaf key whose certificate the CA signed (chain: leaf, ca)."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = self_signed_certificate(ca_key, "test root CA")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "token signer")]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )
    return SigningKey(leaf_key, (leaf, ca)), ca


def verifier_for(
    *certs: x509.Certificate, service: str = "reg", issuer: str = "iss"
) -> TokenVerifier:
    trusted = TrustedKeys()
    trusted.add_certificates(certs, "test bundle")
    return TokenVerifier(trusted, issuer=issuer, service=service)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [
            b64url(json.dumps(header).encode()),
            b64url(json.dumps(claims).encode()),
            b64url(signature),
        ]
    )


def public_pem(key: SigningKey) -> bytes:
    return key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: SigningKey, claims: dict[str, Any], headers: dict[str, Any]) -> str:
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers=headers)
