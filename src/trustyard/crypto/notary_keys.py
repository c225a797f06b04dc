"""Notary-dialect keys: canonical JSON, key IDs, signing and verification, keys at rest.

Pure: stdlib, `cryptography` and securesystemslib's canonical encoder, no I/O.

Canonical JSON. Notary signs `MarshalCanonical` of the decoded `signed` object (the vendored
docker/go canonical/json): keys sorted, no whitespace, strings escape only `\\` and `"` (control
bytes and `<>&` raw, no `\\u` escapes), integers only. securesystemslib's `encode_canonical` is
the same OLPC dialect; `tests/trust/test_keys.py` pins it byte for byte on those edge cases and
the integration tests verify signatures made by the real notary client with it. Notary decodes
numbers into float64 and writes integral floats as integers; we accept integral floats the same
way and refuse others (Notary refuses them too).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from securesystemslib.formats import encode_canonical

KEY_TYPES = ("ed25519", "ecdsa", "ecdsa-x509", "rsa", "rsa-x509")
MIN_RSA_BITS = 2048
ServerKeyAlgorithm = Literal["ed25519", "ecdsa"]


class KeyError_(ValueError):
    """A key or signature in metadata is malformed."""


def _integral(value: Any) -> Any:
    if isinstance(value, float):
        if not value.is_integer():
            raise KeyError_("non-integral numbers are not allowed in signed metadata")
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def canonical_json(value: Any) -> bytes:
    """Notary's canonical form of a decoded JSON value, as UTF-8 bytes."""
    encoded = encode_canonical(_integral(value))
    assert isinstance(encoded, str)
    return encoded.encode("utf-8")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise KeyError_("expected a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise KeyError_("invalid base64") from None


@dataclass(frozen=True)
class PublicKey:
    """A key as Notary writes it: `{"keytype", "keyval": {"private": null, "public": b64}}`."""

    keytype: str
    public: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"keytype": self.keytype, "keyval": {"private": None, "public": b64(self.public)}}

    @classmethod
    def from_json(cls, value: Any) -> PublicKey:
        if not isinstance(value, dict) or not isinstance(value.get("keyval"), dict):
            raise KeyError_("a key must be an object with keytype and keyval")
        keytype = value.get("keytype")
        if keytype not in KEY_TYPES:
            raise KeyError_(f"unsupported key type {keytype!r}")
        if value["keyval"].get("private") is not None:
            raise KeyError_("metadata must not contain private keys")
        key = cls(str(keytype), unb64(value["keyval"].get("public")))
        key.crypto_key()  # parse now: a key that cannot be used is an error, not a non-match
        return key

    def crypto_key(self) -> Any:
        """The `cryptography` public key object."""
        try:
            if self.keytype == "ed25519":
                return ed25519.Ed25519PublicKey.from_public_bytes(self.public)
            if self.keytype.endswith("-x509"):
                key: Any = x509.load_pem_x509_certificate(self.public).public_key()
            else:
                key = serialization.load_der_public_key(self.public)
        except ValueError as exc:
            raise KeyError_(f"unparseable {self.keytype} key: {exc}") from None
        want = ec.EllipticCurvePublicKey if self.keytype.startswith("ecdsa") else rsa.RSAPublicKey
        if not isinstance(key, want):
            raise KeyError_(f"a {self.keytype} key holds a {type(key).__name__}")
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise KeyError_(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        return key


_METHODS = {
    "ed25519": ("eddsa",),
    "ecdsa": ("ecdsa",),
    "ecdsa-x509": ("ecdsa",),
    "rsa": ("rsapss", "rsapkcs1v15", "pycrypto-pkcs#1 pss"),
    "rsa-x509": ("rsapss", "rsapkcs1v15", "pycrypto-pkcs#1 pss"),
}


def verify(key: PublicKey, method: str, signature: bytes, message: bytes) -> bool:
    """True when `signature` (Notary encoding) by `key` over `message` is valid."""
    if method not in _METHODS.get(key.keytype, ()):
        return False
    try:
        pub = key.crypto_key()
        if isinstance(pub, ed25519.Ed25519PublicKey):
            pub.verify(signature, message)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            # Raw r‖s, each half ⌈bits/8⌉ bytes, over SHA-256 (not DER).
            size = (pub.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            pub.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(pub, rsa.RSAPublicKey):
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if method == "rsapkcs1v15"
                else padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            )
            pub.verify(signature, message, pad, hashes.SHA256())
        else:
            return False
    except (InvalidSignature, KeyError_, ValueError):
        return False
    return True


# -- server-held keys ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PrivateKey:
    """A server-held signing key (timestamp or snapshot)."""

    algorithm: ServerKeyAlgorithm
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, algorithm: ServerKeyAlgorithm) -> PrivateKey:
        if algorithm == "ed25519":
            return cls(algorithm, ed25519.Ed25519PrivateKey.generate())
        return cls(algorithm, ec.generate_private_key(ec.SECP256R1()))

    @property
    def public(self) -> PublicKey:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            raw = self.key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            return PublicKey("ed25519", raw)
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return PublicKey("ecdsa", der)

    @property
    def method(self) -> str:
        return "eddsa" if self.algorithm == "ed25519" else "ecdsa"

    def sign(self, message: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(message)
        r, s = decode_dss_signature(self.key.sign(message, ec.ECDSA(hashes.SHA256())))
        size = (self.key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    def encrypt(self, passphrase: bytes) -> bytes:
        """PKCS#8 PEM encrypted with the passphrase (the form stored at rest)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )

    @classmethod
    def decrypt(cls, pem: bytes, passphrase: bytes) -> PrivateKey:
        key = serialization.load_pem_private_key(pem, password=passphrase)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return cls("ed25519", key)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return cls("ecdsa", key)
        raise KeyError_(f"unsupported stored key {type(key).__name__}")


class Signer(Protocol):
    """What signs server metadata: a `PrivateKey` or a key in a PKCS#11 token."""

    @property
    def public(self) -> PublicKey: ...

    @property
    def method(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


def sign_envelope(signed: dict[str, Any], keys: list[Signer]) -> bytes:
    """`{"signed", "signatures"}` as canonical JSON bytes, signed by every key in `keys`."""
    message = canonical_json(signed)
    signatures = [
        {"keyid": k.public.key_id, "method": k.method, "sig": b64(k.sign(message))} for k in keys
    ]
    return canonical_json({"signatures": signatures, "signed": signed})


def key_response(key: PublicKey) -> bytes:
    """The body of GET/POST `{role}.key`, in the field order notary-server writes."""
    return json.dumps(
        {"keytype": key.keytype, "keyval": {"public": b64(key.public), "private": None}},
        separators=(",", ":"),
    ).encode()
