"""Verify the JWS signatures of a Docker schema 1 manifest (libtrust's "pretty JWS").

As libtrust's `JSONSignature.Verify`: each signature names its key in the unprotected header,
either as a `jwk` or as an `x5c` chain whose first certificate holds it, and signs
`protected.base64url(payload)` with `alg`. The key is self-asserted: a valid signature proves the
manifest is what the key's holder signed, not that anyone trusts the key (the authority policy
decides that from the `key_id`). The signature arithmetic is PyJWT's (raw r||s for ECDSA);
oci/schema1.py rebuilds the payload.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import Algorithm, ECAlgorithm, RSAAlgorithm, RSAPSSAlgorithm
from jwt.exceptions import InvalidKeyError

from trustyard.crypto.errors import VerificationError
from trustyard.crypto.keyid import PublicKey, libtrust_kid
from trustyard.crypto.x5c import MAX_CHAIN_CERTIFICATES, describe, signing_problem
from trustyard.oci import schema1
from trustyard.oci.errors import RegistryError

# alg -> (verifier, the EC curve it requires, or None for RSA). libtrust ties ES256/384/512 to
# P-256/384/521 and refuses other pairings; so do we.
_ALGORITHMS: dict[str, tuple[Algorithm, str | None]] = {
    "ES256": (ECAlgorithm(ECAlgorithm.SHA256), "secp256r1"),
    "ES384": (ECAlgorithm(ECAlgorithm.SHA384), "secp384r1"),
    "ES512": (ECAlgorithm(ECAlgorithm.SHA512), "secp521r1"),
    "RS256": (RSAAlgorithm(RSAAlgorithm.SHA256), None),
    "RS384": (RSAAlgorithm(RSAAlgorithm.SHA384), None),
    "RS512": (RSAAlgorithm(RSAAlgorithm.SHA512), None),
    "PS256": (RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256), None),
    "PS384": (RSAPSSAlgorithm(RSAPSSAlgorithm.SHA384), None),
    "PS512": (RSAPSSAlgorithm(RSAPSSAlgorithm.SHA512), None),
}
# Below 2048 bits RSA is breakable; above 8192 one verification is a denial of service.
MIN_RSA_BITS, MAX_RSA_BITS = 2048, 8192


class JwsError(VerificationError):
    """A schema 1 manifest whose signatures do not verify; `reason` names which and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class JwsSigner:
    key_id: str  # libtrust KeyID of the signing public key (crypto/keyid.py)
    public_key: PublicKey
    alg: str
    chain: tuple[x509.Certificate, ...]  # empty when the key came from `jwk`


def verify_schema1(raw: bytes) -> list[JwsSigner]:
    """Every signer of a schema 1 manifest; JwsError unless there is one and all verify.

    Distribution 2.x refused unsigned schema 1 pushes, whatever the media type: so do we.
    """
    try:
        manifest = schema1.parse(raw)
    except RegistryError as exc:
        raise JwsError(exc.message) from None
    if not manifest.signatures:
        raise JwsError("schema 1 manifest is not signed (it has no 'signatures')")
    return [_verify(manifest, entry, i) for i, entry in enumerate(manifest.signatures)]


def _verify(manifest: schema1.Schema1Manifest, entry: schema1.JwsEntry, i: int) -> JwsSigner:
    where = f"signatures[{i}]"
    alg = entry.header.get("alg")
    if not isinstance(alg, str) or alg not in _ALGORITHMS:
        raise JwsError(
            f"{where}: unsupported alg {str(alg)[:20]!r}; expected one of " + ", ".join(_ALGORITHMS)
        )
    verifier, curve = _ALGORITHMS[alg]
    key, chain = _signing_key(entry.header, where)
    if curve is not None:
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
            raise JwsError(f"{where}: alg {alg} needs an EC {curve} key")
    elif not isinstance(key, rsa.RSAPublicKey):
        raise JwsError(f"{where}: alg {alg} needs an RSA key")
    elif not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise JwsError(
            f"{where}: RSA key of {key.key_size} bits; {MIN_RSA_BITS} to {MAX_RSA_BITS} accepted"
        )
    key_id = libtrust_kid(key)
    if not verifier.verify(manifest.signing_input(entry), key, entry.signature):
        raise JwsError(
            f"{where} (key {key_id}, {alg}) does not verify: payload or signature altered"
        )
    return JwsSigner(key_id, key, alg, chain)


def _signing_key(
    header: dict[str, Any], where: str
) -> tuple[PublicKey, tuple[x509.Certificate, ...]]:
    """The key from `x5c` (leaf first, as libtrust prefers it) or else from `jwk`."""
    if "x5c" in header:
        chain = _chain(header["x5c"], where)
        try:
            key = chain[0].public_key()
        except (ValueError, UnsupportedAlgorithm):
            raise JwsError(
                f"{where}: x5c leaf {describe(chain[0])} has an unreadable key"
            ) from None
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise JwsError(f"{where}: x5c leaf {describe(chain[0])} holds no EC or RSA key")
        return key, chain
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise JwsError(f"{where}: header names no key (neither 'jwk' nor 'x5c')")
    return _jwk_key(jwk, where), ()


def _jwk_key(jwk: dict[str, Any], where: str) -> PublicKey:
    kty = jwk.get("kty")
    if "d" in jwk:
        raise JwsError(f"{where}: the jwk holds private key material ('d'); refusing it")
    try:
        if kty == "EC":
            key: Any = ECAlgorithm.from_jwk(jwk)
        elif kty == "RSA":
            key = RSAAlgorithm.from_jwk(jwk)
        else:
            raise JwsError(f"{where}: jwk kty {str(kty)[:10]!r} is not EC or RSA")
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise JwsError(f"{where}: the jwk is not a valid public key ({str(exc)[:100]})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise JwsError(f"{where}: the jwk is not a public EC or RSA key")
    kid = jwk.get("kid")
    if kid is not None and kid != libtrust_kid(key):  # libtrust refuses this mismatch too
        raise JwsError(
            f"{where}: jwk kid {str(kid)[:60]!r} is not the key's libtrust KeyID {libtrust_kid(key)}"
        )
    return key


def _chain(value: Any, where: str) -> tuple[x509.Certificate, ...]:
    """The `x5c` certificates (standard base64 DER, leaf first), each issued by the next.

    No root is consulted here (a schema 1 signature names no trust anchor); the chain's own
    structure is checked so a certificate list that does not chain is refused, not shown.
    """
    if not isinstance(value, list) or not value or not all(isinstance(c, str) for c in value):
        raise JwsError(f"{where}: x5c must be a non-empty array of base64 certificates")
    if len(value) > MAX_CHAIN_CERTIFICATES:
        raise JwsError(
            f"{where}: x5c has {len(value)} certificates; at most {MAX_CHAIN_CERTIFICATES}"
        )
    certs = []
    for n, text in enumerate(value):
        try:
            certs.append(x509.load_der_x509_certificate(base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise JwsError(f"{where}: x5c[{n}] is not a base64 DER certificate") from None
    for child, issuer in itertools.pairwise(certs):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            raise JwsError(
                f"{where}: x5c certificate {describe(child)} is not issued by the next one, "
                f"{describe(issuer)}"
            ) from None
    problem = signing_problem(certs[0])
    if problem is not None:
        raise JwsError(
            f"{where}: x5c leaf {describe(certs[0])} may not sign: its KeyUsage lacks "
            "digitalSignature"
        )
    return tuple(certs)
