"""Test-only libtrust "pretty JWS" signer, to make schema 1 manifests the registry must judge.

Writes what libtrust's `JSONSignature.PrettySignature` writes: the payload up to its last
member, then `"signatures": [...]` and the original closing bytes; each protected header records
`formatLength`/`formatTail`. The real client (skopeo) makes the other fixtures.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustyard.crypto.keyid import libtrust_kid, public_jwk

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_EC_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass
class Key:
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    alg: str = ""
    chain: list[x509.Certificate] = field(default_factory=list)  # x5c instead of jwk

    def __post_init__(self) -> None:
        if not self.alg:
            priv = self.private
            self.alg = (
                _EC_ALG[priv.curve.name]
                if isinstance(priv, ec.EllipticCurvePrivateKey)
                else "RS256"
            )

    @property
    def kid(self) -> str:
        return libtrust_kid(self.private.public_key())

    def header(self) -> dict[str, Any]:
        if self.chain:
            der = [c.public_bytes(serialization.Encoding.DER) for c in self.chain]
            return {"alg": self.alg, "x5c": [base64.b64encode(d).decode() for d in der]}
        return {"jwk": {**public_jwk(self.private.public_key()), "kid": self.kid}, "alg": self.alg}

    def sign(self, data: bytes) -> bytes:
        algo = _HASHES[self.alg[2:]]()
        if isinstance(self.private, rsa.RSAPrivateKey):
            pad = (
                padding.PSS(padding.MGF1(algo), algo.digest_size)
                if self.alg.startswith("PS")
                else padding.PKCS1v15()
            )
            return self.private.sign(data, pad, algo)
        r, s = decode_dss_signature(self.private.sign(data, ec.ECDSA(algo)))
        size = (self.private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def p256() -> Key:
    return Key(ec.generate_private_key(ec.SECP256R1()))


def manifest_body(name: str, blob_sums: list[str], tag: str = "v1") -> dict[str, Any]:
    return {
        "schemaVersion": 1,
        "name": name,
        "tag": tag,
        "architecture": "amd64",
        "fsLayers": [{"blobSum": b} for b in blob_sums],
        "history": [
            {"v1Compatibility": json.dumps({"id": f"{i:064x}"})} for i in range(len(blob_sums))
        ],
    }


def protected(length: int, tail: bytes) -> str:
    header = {"formatLength": length, "formatTail": b64url(tail), "time": "2026-01-01T00:00:00Z"}
    return b64url(json.dumps(header).encode())


def sign_pretty(body: dict[str, Any] | bytes, keys: list[Key]) -> bytes:
    """The pretty-JWS document of `body` (3-space indent, as libtrust), signed by `keys`."""
    payload = body if isinstance(body, bytes) else json.dumps(body, indent=3).encode()
    close = len(payload.rstrip())  # index after the final '}'
    length = len(payload[: close - 1].rstrip())  # after the last member, before the '}'
    tail = payload[length:]
    prot = protected(length, tail)
    signing_input = f"{prot}.{b64url(payload)}".encode()
    sigs = [
        {"header": k.header(), "signature": b64url(k.sign(signing_input)), "protected": prot}
        for k in keys
    ]
    return (
        payload[:length]
        + b',\n   "signatures": '
        + json.dumps(sigs, indent=3).replace("\n", "\n   ").encode()
        + b"\n}"
    )
