"""Registry-token signing keys: loading, first-start creation, and trusted JWKS files.

The issuer signs with ES256 (default), RS256 or EdDSA and names its key by a `kid` in libtrust or
RFC 7638 form plus an `x5c` chain (leaf first); `algorithms_for` pins each key type to the JWS
algorithms it may sign with, which the verifier enforces too.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from trustyard.crypto.keyid import PublicKey, as_public_key, jwk_thumbprint, libtrust_kid
from trustyard.crypto.x5c import ChainRejected, check_leaf_usage

KidFormat = Literal["libtrust", "rfc7638", "jwks"]
Algorithm = Literal["ES256", "RS256", "EdDSA"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def algorithms_for(key: PublicKey) -> tuple[str, ...]:
    """The JWS algorithms a key of this type may sign with (pins `alg` to the key)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}.get(
            key.curve.name, ()
        )
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    return ("EdDSA",)


@dataclass(frozen=True)
class SigningKey:
    """A private key and its certificate chain (leaf first)."""

    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def public_key(self) -> PublicKey:
        return as_public_key(self.private_key)

    @property
    def algorithm(self) -> str:
        return algorithms_for(self.public_key)[0]

    def kid(self, form: KidFormat) -> str:
        if form == "libtrust":
            return libtrust_kid(self.public_key)
        # "jwks": the kid under which our JWKS document lists the key is the RFC 7638 thumbprint.
        return jwk_thumbprint(self.public_key)

    def x5c(self) -> list[str]:
        return [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
            for c in self.chain
        ]


def generate_private_key(algorithm: Algorithm) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def self_signed_certificate(
    key: PrivateKey, common_name: str, days: int = 3650
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "trustyard")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest)


def _private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(key_path: Path, cert_path: Path) -> SigningKey:
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (ValueError, TypeError) as exc:  # not PEM, or encrypted
        raise ValueError(f"{key_path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(
        loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError(f"{key_path}: unsupported key type; use EC P-256, RSA or Ed25519")
    try:
        chain = tuple(x509.load_pem_x509_certificates(cert_path.read_bytes()))
    except ValueError as exc:
        raise ValueError(f"{cert_path}: not a PEM certificate chain ({exc})") from None
    if not chain:
        raise ValueError(f"{cert_path}: no certificate")
    if chain[0].public_key() != loaded.public_key():
        raise ValueError(
            f"{cert_path}: the first certificate is not for the key in {key_path} (leaf first)"
        )
    try:
        check_leaf_usage(chain[0])  # else verifiers (this one too) refuse every token it signs
    except ChainRejected as exc:
        raise ValueError(f"{cert_path}: {exc.reason}") from None
    return SigningKey(loaded, chain)


def load_or_create_signing_key(
    directory: Path, algorithm: Algorithm, common_name: str
) -> SigningKey:
    """The issuer key of this data dir, generated atomically at first start (safe with workers)."""
    final = directory / "token-signing"
    key_path, cert_path = final / "key.pem", final / "cert.pem"
    if not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".token-signing-{secrets.token_hex(8)}"
        staging.mkdir(mode=0o700)
        key = generate_private_key(algorithm)
        fd = os.open(staging / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_private_pem(key))
        cert = self_signed_certificate(key, common_name)
        (staging / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        try:
            staging.rename(final)  # atomic; loses the race quietly when another worker won
        except OSError:
            for p in staging.iterdir():
                p.unlink()
            staging.rmdir()
    return load_signing_key(key_path, cert_path)


def load_jwks_file(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f'{path}: not a JWKS document ({{"keys": [...]}})')
    return data
