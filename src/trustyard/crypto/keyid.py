"""Key identifiers: the libtrust KeyID (Distribution 2.x, notary, seed 000) and RFC 7638 thumbprints.

libtrust (docker/libtrust util.go `keyIDFromCryptoKey`): SHA-256 over the DER
SubjectPublicKeyInfo of the *public key*, first 240 bits (30 bytes), base32 (RFC 4648 alphabet)
without padding, 12 groups of 4 characters joined by ':'.

Seed 000's mistake was hashing the DER of the whole *certificate*; `explain_kid` recognises that
form and says so.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeyFileError(ValueError):
    """The file holds nothing we can take a key from; the message says what was tried."""


def _libtrust_format(digest: bytes) -> str:
    b32 = base64.b32encode(digest[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def libtrust_kid(key: PublicKey) -> str:
    """The libtrust KeyID of a public key (what Distribution 2.x and notary look up)."""
    return _libtrust_format(hashlib.sha256(spki_der(key)).digest())


def certificate_der_kid(cert: x509.Certificate) -> str:
    """Seed 000's mistake: the libtrust format computed over the certificate, not its key."""
    return _libtrust_format(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())


def _b64url_uint(value: int, length: int | None = None) -> str:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).decode().rstrip("=")


def public_jwk(key: PublicKey) -> dict[str, str]:
    """The RFC 7517 JWK members that RFC 7638 hashes (no kid, no alg)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(
            key.curve.name
        )
        if curve is None:
            raise KeyFileError(f"unsupported EC curve {key.curve.name}")
        size = (key.curve.key_size + 7) // 8
        nums = key.public_numbers()
        return {
            "crv": curve,
            "kty": "EC",
            "x": _b64url_uint(nums.x, size),
            "y": _b64url_uint(nums.y, size),
        }
    if isinstance(key, rsa.RSAPublicKey):
        rnums = key.public_numbers()
        return {"e": _b64url_uint(rnums.e), "kty": "RSA", "n": _b64url_uint(rnums.n)}
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {"crv": "Ed25519", "kty": "OKP", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}


def jwk_thumbprint(key: PublicKey) -> str:
    """RFC 7638 SHA-256 JWK thumbprint, base64url (what Distribution 3.x looks up)."""
    canonical = json.dumps(public_jwk(key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).decode().rstrip("=")


def as_public_key(key: PublicKeyTypes | PrivateKeyTypes) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        return key
    raise KeyFileError(f"unsupported key type {type(key).__name__}; use EC, RSA or Ed25519")


@dataclass(frozen=True, slots=True)
class LoadedKey:
    """A public key taken from a file, with what the file was."""

    public_key: PublicKey
    kind: str  # "certificate", "public key" or "private key"
    certificate: x509.Certificate | None = None

    def kids(self) -> dict[str, str]:
        return {
            "libtrust": libtrust_kid(self.public_key),
            "rfc7638": jwk_thumbprint(self.public_key),
        }


def load_key_material(data: bytes) -> LoadedKey:
    """A certificate, public key or unencrypted private key, in PEM or DER."""
    attempts: list[tuple[str, Any]] = [
        ("certificate", x509.load_pem_x509_certificate),
        ("certificate", x509.load_der_x509_certificate),
        ("public key", serialization.load_pem_public_key),
        ("public key", serialization.load_der_public_key),
        ("private key", lambda d: serialization.load_pem_private_key(d, None)),
        ("private key", lambda d: serialization.load_der_private_key(d, None)),
    ]
    for kind, loader in attempts:
        try:
            obj = loader(data)
        except (ValueError, TypeError):
            continue
        if kind == "certificate":
            return LoadedKey(as_public_key(obj.public_key()), kind, obj)
        return LoadedKey(as_public_key(obj), kind)
    raise KeyFileError(
        "not a PEM or DER certificate, public key or unencrypted private key "
        "(encrypted keys: decrypt with `openssl pkey` first)"
    )


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle (or one DER certificate)."""
    if b"-----BEGIN" in data:
        return list(x509.load_pem_x509_certificates(data))
    return [x509.load_der_x509_certificate(data)]


def explain_kid(kid: str, certificates: list[x509.Certificate]) -> str | None:
    """Why `kid` looks wrong for these certificates, when it is a known mistake; else None."""
    for cert in certificates:
        if kid == certificate_der_kid(cert):
            key = as_public_key(cert.public_key())
            try:  # names parse lazily: a malformed one raises only now
                subject = cert.subject.rfc4514_string()[:100] or "the certificate"
            except ValueError:
                subject = "the certificate"
            return (
                f"kid {kid} is the libtrust form computed over the whole certificate DER of "
                f"{subject}; a libtrust KeyID hashes "
                f"the public key (DER SubjectPublicKeyInfo) instead: use {libtrust_kid(key)} "
                f"(or the RFC 7638 thumbprint {jwk_thumbprint(key)}); "
                "`trustyard keyid CERT --all` prints both"
            )
    return None
