"""The namespace authority's signed statements: issue them, check them, evaluate a set into a Graph.

A statement is a JWS in the *compact* serialization (`header.payload.signature`, one line of
ASCII: easy to store, post and concatenate in files). Its protected header carries `alg`
(ES256/ES384/ES512 follow the signer's curve; RS256 is accepted on input), `typ`
("trustyard-authority+jws") and `x5c`, the authority's certificate chain, leaf first. The payload
(JSON) has `id` (128 random bits, hex), `type` ("grant" or "revoke"), `issued` and `expires`
(RFC 3339 UTC, `expires` null for "never"), and

- for a grant: `key` {`type` "pkix"|"openpgp", `id`, `public`}, `user`, `namespaces` (globs);
  the key id is recomputed from `public` (libtrust KeyID, or the OpenPGP v4 fingerprint) and
  must match, so a statement cannot name one key and carry another;
- for a revocation: `revokes` {`statement`: id} or {`key`: key id}, and `reason`.

Framing and signing are done here rather than with PyJWT because the signer may be a PKCS#11
token (it signs a digest, never sees the key's bytes); the primitives are `cryptography`'s.

`parse` checks what needs no trust decision (shape, signature by the leaf, the leaf's KeyUsage);
`evaluate` adds the client's choice of roots and a clock. Revocations are permanent: a revoked
statement id stays revoked whatever is replayed, and a key revocation refuses every grant of
that key issued at or before it (a later grant re-admits the key deliberately).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from trustyard.authority.model import GrantedKey, Graph, KeyType, Refusal, Revocation
from trustyard.crypto import openpgp_key
from trustyard.crypto.keyid import KeyFileError, libtrust_kid, load_key_material
from trustyard.crypto.x5c import CA_POLICY, LEAF_POLICY, describe, signing_problem
from trustyard.oci import jsonbounds

TYP = "trustyard-authority+jws"
MAX_STATEMENT_BYTES = 64 * 1024
MAX_CHAIN_CERTIFICATES = 8
MAX_NAMESPACES = 256
MAX_NAME = 255
# A statement issued a little ahead of the verifier's clock still counts (clocks drift).
CLOCK_SKEW = timedelta(minutes=5)

StatementType = Literal["grant", "revoke"]
# Ids become file names (`fetch` writes ID.jws) and URL path segments: no '/', no leading dot.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_EC_ALGS: dict[str, tuple[str, hashes.HashAlgorithm]] = {
    "ES256": ("secp256r1", hashes.SHA256()),
    "ES384": ("secp384r1", hashes.SHA384()),
    "ES512": ("secp521r1", hashes.SHA512()),
}
_CURVE_ALG = {curve: alg for alg, (curve, _) in _EC_ALGS.items()}


class StatementError(ValueError):
    """A statement we cannot issue or accept; the message names what is wrong."""


class DigestSigner(Protocol):
    """An EC key that signs a precomputed digest: a key file (`KeySigner`) or a PKCS#11 token
    (`crypto.pkcs11.Pkcs11Signer`). The digest's hash follows the curve (JWS ES256/384/512)."""

    def public_key_der(self) -> bytes: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """A DER ECDSA signature over `digest`."""
        ...


class KeySigner:
    """A `DigestSigner` over an EC private key in memory (P-256, P-384 or P-521)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if key.curve.name not in _CURVE_ALG:
            raise StatementError(f"authority key is on curve {key.curve.name}; use P-256 or P-384")
        self._key = key

    def public_key_der(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign_digest(self, digest: bytes) -> bytes:
        _, algorithm = _EC_ALGS[_CURVE_ALG[self._key.curve.name]]
        return self._key.sign(digest, ec.ECDSA(Prehashed(algorithm)))


@dataclass(frozen=True)
class Root:
    """A root CA the client chose; `enabled=False` keeps it on disk but trusts nothing under it."""

    name: str
    certificate: x509.Certificate
    enabled: bool = True


@dataclass(frozen=True)
class Statement:
    """A parsed statement whose signature verifies with its own leaf (no roots judged yet)."""

    raw: bytes
    id: str
    type: StatementType
    issued: datetime
    expires: datetime | None
    chain: tuple[x509.Certificate, ...]
    # grant
    key_type: KeyType | None = None
    key_id: str | None = None
    key_public: bytes = b""
    user: str = ""
    namespaces: tuple[str, ...] = ()
    # revoke
    revokes_statement: str | None = None
    revokes_key: str | None = None
    reason: str = ""

    @property
    def authority(self) -> str:
        return describe(self.chain[0])

    @property
    def subject_key(self) -> str | None:
        """The key the statement is about: the granted key, or the revoked one."""
        return self.key_id if self.type == "grant" else self.revokes_key


# -- encoding helpers -----------------------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64url_decode(text: str, what: str) -> bytes:
    if not text or any(c in text for c in "+/= \n"):
        raise StatementError(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise StatementError(f"{what} is not base64url") from None


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise StatementError(f"{what} must be an RFC 3339 timestamp string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise StatementError(f"{what} {value[:40]!r} is not an RFC 3339 timestamp") from None
    if when.tzinfo is None:
        raise StatementError(f"{what} {value[:40]!r} has no time zone")
    return when.astimezone(UTC)


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise StatementError("the evaluation time must carry a time zone")
    return now.astimezone(UTC)


def label(data: bytes) -> str:
    """How to name a statement we could not parse: a digest of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


# -- keys -----------------------------------------------------------------------------------
def describe_key(public: bytes) -> tuple[KeyType, str, bytes]:
    """(type, id, canonical public bytes) of a key given to `grant --key`: an armored (or binary)
    OpenPGP public key, or a PEM/DER public key or certificate (stored as PEM SPKI)."""
    if openpgp_key.is_openpgp(public):
        try:
            fpr = openpgp_key.fingerprint(public)
        except openpgp_key.OpenPgpKeyError as exc:
            raise StatementError(str(exc)) from None
        armored = public if openpgp_key.ARMOR_BEGIN in public else _armor(public)
        return "openpgp", fpr, armored
    try:
        loaded = load_key_material(public)
    except KeyFileError as exc:
        raise StatementError(f"not a public key: {exc}") from None
    if loaded.kind == "private key":
        raise StatementError("this is a private key; grant its public half")
    pem = loaded.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "pkix", libtrust_kid(loaded.public_key), pem


def _armor(binary: bytes) -> bytes:
    """Armor a binary key so the statement's JSON carries text (CRC-24 is optional, RFC 4880 §6)."""
    b64 = base64.b64encode(binary).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    text = "\n".join(["-----BEGIN PGP PUBLIC KEY BLOCK-----", "", *lines])
    return (text + "\n-----END PGP PUBLIC KEY BLOCK-----\n").encode()


# -- issuing --------------------------------------------------------------------------------
def _sign(
    signer: DigestSigner, chain: Sequence[x509.Certificate], payload: dict[str, Any]
) -> bytes:
    if not chain:
        raise StatementError("the authority certificate chain is empty")
    if len(chain) > MAX_CHAIN_CERTIFICATES:
        raise StatementError(f"the chain has more than {MAX_CHAIN_CERTIFICATES} certificates")
    leaf_der = (
        chain[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if leaf_der != signer.public_key_der():
        raise StatementError(
            f"the authority key does not belong to the certificate {describe(chain[0])} "
            "(the first certificate of the chain must be the key's own)"
        )
    problem = signing_problem(chain[0])
    if problem is not None:
        raise StatementError(f"certificate {describe(chain[0])}: {problem}")
    key = chain[0].public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in _CURVE_ALG:
        raise StatementError("the authority key must be EC P-256, P-384 or P-521")
    alg = _CURVE_ALG[key.curve.name]
    x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain]
    header = {"alg": alg, "typ": TYP, "x5c": x5c}
    signing_input = (
        _b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64url(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    )
    _, algorithm = _EC_ALGS[alg]
    digest = hashes.Hash(algorithm)
    digest.update(signing_input.encode())
    r, s = decode_dss_signature(signer.sign_digest(digest.finalize()))
    size = (key.curve.key_size + 7) // 8
    raw = r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return (signing_input + "." + _b64url(raw)).encode()


def _base(kind: StatementType, now: datetime | None, expires: datetime | None) -> dict[str, Any]:
    issued = _utc(now)
    if expires is not None and _utc(expires) <= issued:
        raise StatementError(f"expiry {_timestamp(expires)} is not after {_timestamp(issued)}")
    return {
        "id": secrets.token_hex(16),
        "type": kind,
        "issued": _timestamp(issued),
        "expires": _timestamp(expires) if expires is not None else None,
    }


def _check_name(value: str, what: str) -> str:
    if not value or len(value) > MAX_NAME or any(c.isspace() for c in value):
        raise StatementError(f"{what} {value[:40]!r} must be 1-{MAX_NAME} characters, no spaces")
    return value


def issue_grant(
    signer: DigestSigner,
    chain: Sequence[x509.Certificate],
    key_public: bytes,
    user: str,
    namespaces: Sequence[str],
    expires: datetime | None = None,
    now: datetime | None = None,
) -> bytes:
    """A statement linking the key to `user` and `user` to `namespaces` (globs like 'team/*')."""
    key_type, key_id, public = describe_key(key_public)
    if not namespaces:
        raise StatementError("a grant needs at least one namespace")
    if len(namespaces) > MAX_NAMESPACES:
        raise StatementError(f"a grant names at most {MAX_NAMESPACES} namespaces")
    payload = _base("grant", now, expires)
    payload |= {
        "key": {"type": key_type, "id": key_id, "public": public.decode()},
        "user": _check_name(user, "user"),
        "namespaces": [_check_name(ns, "namespace") for ns in dict.fromkeys(namespaces)],
    }
    return _sign(signer, chain, payload)


def issue_revocation(
    signer: DigestSigner,
    chain: Sequence[x509.Certificate],
    *,
    statement_id: str | None = None,
    key_id: str | None = None,
    reason: str,
    now: datetime | None = None,
) -> bytes:
    """A statement revoking one statement (by id) or every earlier grant of a key (by key id)."""
    if (statement_id is None) == (key_id is None):
        raise StatementError("a revocation names either a statement id or a key id")
    if statement_id is not None and not _ID.match(statement_id):
        raise StatementError(f"{statement_id[:40]!r} is not a statement id")
    target = statement_id if statement_id is not None else key_id
    assert target is not None
    _check_name(target, "the revoked id")
    if not reason.strip():
        raise StatementError("a revocation needs a reason")
    payload = _base("revoke", now, None)
    payload |= {
        "revokes": {"statement": statement_id} if statement_id else {"key": key_id},
        "reason": reason.strip()[:1000],
    }
    return _sign(signer, chain, payload)


# -- parsing --------------------------------------------------------------------------------
def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = jsonbounds.loads(data, what=what, max_depth=8)
    except jsonbounds.JSONBoundsError as exc:
        raise StatementError(str(exc)) from None
    if not isinstance(value, dict):
        raise StatementError(f"{what} is not a JSON object")
    return value


def _chain(header: dict[str, Any]) -> tuple[x509.Certificate, ...]:
    x5c = header.get("x5c")
    if not isinstance(x5c, list) or not x5c:
        raise StatementError("the header has no x5c certificate chain")
    if len(x5c) > MAX_CHAIN_CERTIFICATES:
        raise StatementError(f"x5c has more than {MAX_CHAIN_CERTIFICATES} certificates")
    chain = []
    for i, item in enumerate(x5c):
        try:
            if not isinstance(item, str):
                raise ValueError
            chain.append(x509.load_der_x509_certificate(base64.b64decode(item, validate=True)))
        except (binascii.Error, ValueError):
            raise StatementError(f"x5c[{i}] is not a base64 DER certificate") from None
    return tuple(chain)


def _verify_signature(
    alg: str, leaf: x509.Certificate, signing_input: bytes, signature: bytes
) -> None:
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise StatementError(f"the key of certificate {describe(leaf)} is unsupported") from None
    try:
        if alg in _EC_ALGS:
            curve, algorithm = _EC_ALGS[alg]
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
                raise StatementError(f"alg {alg} does not match the key of {describe(leaf)}")
            size = (key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                raise StatementError("signature invalid (wrong length)")
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            key.verify(encode_dss_signature(r, s), signing_input, ec.ECDSA(algorithm))
        elif alg == "RS256":
            if not isinstance(key, rsa.RSAPublicKey):
                raise StatementError(f"alg {alg} does not match the key of {describe(leaf)}")
            key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            raise StatementError(f"alg {str(alg)[:20]!r} is not supported (ES256, ES384, RS256)")
    except InvalidSignature:
        raise StatementError(
            f"signature invalid: it does not verify with the key of {describe(leaf)}"
        ) from None


def _string(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise StatementError(f"the payload's {name!r} is missing or not a string")
    return value


def parse(data: bytes) -> Statement:
    """A statement whose shape is right and whose signature verifies with its own x5c leaf.

    Says nothing about trust: that needs the client's roots (`evaluate`).
    """
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError(f"statement is larger than {MAX_STATEMENT_BYTES} bytes")
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise StatementError("not a JWS: the compact serialization is ASCII") from None
    parts = text.split(".")
    if len(parts) != 3:
        raise StatementError("not a compact JWS (expected header.payload.signature)")
    header = _json_object(_b64url_decode(parts[0], "the header"), "the header")
    if header.get("typ") != TYP:
        raise StatementError(f"the header's typ is not {TYP!r}")
    if "crit" in header:
        raise StatementError("the header has critical extensions we do not understand")
    chain = _chain(header)
    signature = _b64url_decode(parts[2], "the signature")
    _verify_signature(
        str(header.get("alg")), chain[0], f"{parts[0]}.{parts[1]}".encode(), signature
    )
    problem = signing_problem(chain[0])
    if problem is not None:
        raise StatementError(f"certificate {describe(chain[0])}: {problem}")
    payload = _json_object(_b64url_decode(parts[1], "the payload"), "the payload")
    return _statement(text.encode(), payload, chain)


def _statement(
    raw: bytes, payload: dict[str, Any], chain: tuple[x509.Certificate, ...]
) -> Statement:
    sid = _string(payload, "id")
    if not _ID.match(sid):
        raise StatementError(f"id {sid[:40]!r} must be 1-128 letters, digits, '.', '_' or '-'")
    kind = payload.get("type")
    issued = _parse_time(payload.get("issued"), "issued")
    expires_raw = payload.get("expires")
    expires = None if expires_raw is None else _parse_time(expires_raw, "expires")
    common: dict[str, Any] = {
        "raw": raw,
        "id": sid,
        "issued": issued,
        "expires": expires,
        "chain": chain,
    }
    if kind == "grant":
        key = payload.get("key")
        if not isinstance(key, dict):
            raise StatementError("the grant has no 'key' object")
        public = _string(key, "public").encode()
        key_type, key_id, _ = describe_key(public)
        if key.get("type") != key_type or key.get("id") != key_id:
            raise StatementError(
                f"the grant's key id {str(key.get('id'))[:60]!r} ({key.get('type')}) is not "
                f"the id of its public key ({key_id}, {key_type})"
            )
        namespaces = payload.get("namespaces")
        if (
            not isinstance(namespaces, list)
            or not namespaces
            or len(namespaces) > MAX_NAMESPACES
            or not all(isinstance(n, str) for n in namespaces)
        ):
            raise StatementError(f"the grant's namespaces must be 1-{MAX_NAMESPACES} strings")
        return Statement(
            type="grant",
            key_type=key_type,
            key_id=key_id,
            key_public=public,
            user=_check_name(_string(payload, "user"), "user"),
            namespaces=tuple(_check_name(n, "namespace") for n in namespaces),
            **common,
        )
    if kind == "revoke":
        revokes = payload.get("revokes")
        if not isinstance(revokes, dict) or len(revokes) != 1:
            raise StatementError("the revocation's 'revokes' must name one statement or key")
        target_statement = revokes.get("statement")
        target_key = revokes.get("key")
        target = target_statement if target_statement is not None else target_key
        if not isinstance(target, str):
            raise StatementError("the revocation's 'revokes' must name one statement or key")
        _check_name(target, "the revoked id")
        return Statement(
            type="revoke",
            revokes_statement=target_statement,
            revokes_key=target_key,
            reason=_string(payload, "reason")[:1000],
            **common,
        )
    raise StatementError(f"the payload's type {str(kind)[:20]!r} is not 'grant' or 'revoke'")


# -- evaluation -----------------------------------------------------------------------------
def _store(certs: list[x509.Certificate]) -> Store | None:
    return Store(certs) if certs else None


def _validates(statement: Statement, store: Store, now: datetime) -> str | None:
    """None when the chain leads to a root of `store` at `now`, else the library's reason."""
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(now)
        .max_chain_depth(MAX_CHAIN_CERTIFICATES - 1)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=LEAF_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(statement.chain[0], list(statement.chain[1:]))
    except (VerificationError, ValueError, UnsupportedAlgorithm) as exc:
        return str(exc).removeprefix("validation failed: ")[:200]
    return None


def chain_problem(statement: Statement, roots: Sequence[Root], now: datetime) -> str | None:
    """Why the statement's chain does not lead to an enabled root at `now`, or None."""
    for cert in statement.chain:
        if cert.not_valid_after_utc < now:
            return f"certificate {describe(cert)} expired on {_timestamp(cert.not_valid_after_utc)}"
        if cert.not_valid_before_utc > now:
            return (
                f"certificate {describe(cert)} is not valid before "
                f"{_timestamp(cert.not_valid_before_utc)}"
            )
    enabled = _store([r.certificate for r in roots if r.enabled])
    why = _validates(statement, enabled, now) if enabled else "no enabled root is configured"
    if why is None:
        return None
    for root in roots:
        if not root.enabled and _validates(statement, Store([root.certificate]), now) is None:
            return f"chain ends at root {root.name}, which is disabled"
    return f"chain does not end at an enabled root ({why})"


def evaluate(statements: Iterable[bytes], roots: Sequence[Root], now: datetime) -> Graph:
    """What the statements grant, judged against the client's roots at `now`.

    Every statement that does not count lands in `Graph.refused` with its reason; the same bytes
    twice count once.
    """
    now = _utc(now)
    refused: list[Refusal] = []
    valid: dict[str, Statement] = {}
    seen: set[bytes] = set()
    for data in statements:
        raw = data.strip()
        if raw in seen:
            continue
        seen.add(raw)
        try:
            statement = parse(raw)
        except StatementError as exc:
            refused.append(Refusal(label(raw), f"malformed: {exc}"))
            continue
        problem = chain_problem(statement, roots, now)
        if problem is None and statement.issued > now + CLOCK_SKEW:
            problem = f"issued in the future ({_timestamp(statement.issued)})"
        if problem is None and statement.id in valid:
            problem = "another valid statement carries the same id"
        if problem is not None:
            refused.append(Refusal(statement.id, problem, statement.key_id))
            continue
        valid[statement.id] = statement
    revocations = sorted(
        (s for s in valid.values() if s.type == "revoke"), key=lambda s: (s.issued, s.id)
    )
    grants: list[GrantedKey] = []
    for grant in sorted(
        (s for s in valid.values() if s.type == "grant"), key=lambda s: (s.issued, s.id)
    ):
        reason = _revoked(grant, revocations)
        if reason is None and grant.expires is not None and grant.expires <= now:
            reason = f"expired on {_timestamp(grant.expires)}"
        if reason is not None:
            refused.append(Refusal(grant.id, reason, grant.key_id))
            continue
        assert grant.key_id is not None and grant.key_type is not None
        grants.append(
            GrantedKey(
                key_id=grant.key_id,
                key_type=grant.key_type,
                public=grant.key_public,
                user=grant.user,
                namespaces=grant.namespaces,
                statement=grant.id,
                authority=grant.authority,
                expires=grant.expires,
            )
        )
    return Graph(
        grants=tuple(grants),
        refused=tuple(refused),
        revocations=tuple(
            Revocation(
                statement=r.id,
                reason=r.reason,
                issued=r.issued,
                authority=r.authority,
                revokes_statement=r.revokes_statement,
                revokes_key=r.revokes_key,
            )
            for r in revocations
        ),
    )


def _revoked(grant: Statement, revocations: Sequence[Statement]) -> str | None:
    for rev in revocations:
        if rev.revokes_statement == grant.id:
            return f"revoked by {rev.id} on {_timestamp(rev.issued)}: {rev.reason}"
        if rev.revokes_key is not None and rev.revokes_key == grant.key_id:
            if rev.issued >= grant.issued:
                return (
                    f"key {grant.key_id} revoked by {rev.id} on {_timestamp(rev.issued)}: "
                    f"{rev.reason}"
                )
    return None
