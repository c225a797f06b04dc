"""Notary's TUF dialect as typed, immutable values (parse only what we check).

Not TUF 1.0: capitalised `_type`, no `spec_version`, base64 hashes and signatures, no `version` in
snapshot/timestamp meta, no `terminating` on delegations. Pure: no I/O.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization

from trustyard.crypto.notary_keys import KeyError_, PublicKey, b64, canonical_json, unb64, verify
from trustyard.oci import jsonbounds

ROOT, TARGETS, SNAPSHOT, TIMESTAMP = "root", "targets", "snapshot", "timestamp"
BASE_ROLES = (ROOT, TARGETS, SNAPSHOT, TIMESTAMP)
_TYPES = {ROOT: "Root", TARGETS: "Targets", SNAPSHOT: "Snapshot", TIMESTAMP: "Timestamp"}
# Notary's route grammar: root|targets(/[^/\s]+)*|snapshot|timestamp; we are stricter on the
# delegation segment (printable, no dot-only names, bounded) so role names are safe keys.
_DELEGATION_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
MAX_DELEGATION_DEPTH = 8


class MetadataError(ValueError):
    """Metadata that cannot be parsed or is structurally invalid."""


def valid_role(role: str) -> bool:
    if role in BASE_ROLES:
        return True
    parts = role.split("/")
    return (
        parts[0] == TARGETS
        and 1 < len(parts) <= MAX_DELEGATION_DEPTH + 1
        and all(_DELEGATION_SEGMENT.match(p) for p in parts[1:])
    )


def is_delegation(role: str) -> bool:
    return role.startswith(TARGETS + "/") and valid_role(role)


def parent_role(role: str) -> str:
    return role.rsplit("/", 1)[0]


def role_type(role: str) -> str:
    return _TYPES[TARGETS] if is_delegation(role) else _TYPES[role]


def parse_time(text: Any) -> dt.datetime:
    """RFC 3339 as Go writes it (fractions up to nanoseconds, `Z` or an offset)."""
    if not isinstance(text, str):
        raise MetadataError("expires must be an RFC 3339 string")
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", text)
    if not m:
        raise MetadataError(f"expires {text[:40]!r} is not an RFC 3339 time")
    base, frac, zone = m.groups()
    iso = base + ("." + (frac + "000000")[:6] if frac else "") + ("+00:00" if zone == "Z" else zone)
    try:
        return dt.datetime.fromisoformat(iso)
    except ValueError:
        raise MetadataError(f"expires {text[:40]!r} is not a valid time") from None


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int(value: Any, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetadataError(f"{what} must be an integer")
    if isinstance(value, float) and not value.is_integer():
        raise MetadataError(f"{what} must be an integer")
    if value < minimum:
        raise MetadataError(f"{what} must be at least {minimum}")
    return int(value)


MAX_VERSION = 2**31 - 1  # stored in a 32-bit SQL integer, as Notary does


def _version(value: Any, role: str) -> int:
    version = _int(value, f"{role}.version", 1)
    if version > MAX_VERSION:
        raise MetadataError(f"{role}.version {version} is larger than {MAX_VERSION}")
    return version


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MetadataError(f"{what} must be a JSON object")
    return value


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MetadataError(f"{what} must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class Signature:
    keyid: str
    method: str
    sig: bytes


@dataclass(frozen=True)
class RoleKeys:
    """Who may sign a role: key IDs and how many of them must."""

    keyids: tuple[str, ...]
    threshold: int

    @classmethod
    def from_json(cls, value: Any, what: str, keys: dict[str, PublicKey]) -> RoleKeys:
        obj = _obj(value, what)
        keyids = _str_list(obj.get("keyids"), f"{what}.keyids")
        threshold = _int(obj.get("threshold"), f"{what}.threshold", 1)
        missing = [k for k in keyids if k not in keys]
        if missing:
            raise MetadataError(f"{what} names keys that are not listed: {', '.join(missing)}")
        if len(set(keyids)) < threshold:
            raise MetadataError(f"{what} has fewer keys ({len(set(keyids))}) than its threshold")
        return cls(keyids, threshold)


def parse_keys(value: Any, what: str) -> dict[str, PublicKey]:
    keys: dict[str, PublicKey] = {}
    for keyid, raw in _obj(value, what).items():
        try:
            key = PublicKey.from_json(raw)
        except KeyError_ as exc:
            raise MetadataError(f"{what}[{keyid}]: {exc}") from None
        if key.key_id != keyid:
            raise MetadataError(f"{what}: key ID {keyid} does not match its key ({key.key_id})")
        keys[keyid] = key
    return keys


@dataclass(frozen=True)
class FileMeta:
    """Length and hashes (raw bytes by algorithm) of a metadata file or a target."""

    length: int
    hashes: dict[str, bytes]

    @classmethod
    def from_json(cls, value: Any, what: str) -> FileMeta:
        obj = _obj(value, what)
        hashes_raw = _obj(obj.get("hashes"), f"{what}.hashes")
        try:
            hashes = {alg: unb64(h) for alg, h in hashes_raw.items()}
        except KeyError_ as exc:
            raise MetadataError(f"{what}.hashes: {exc}") from None
        return cls(_int(obj.get("length"), f"{what}.length"), hashes)

    @classmethod
    def of(cls, data: bytes) -> FileMeta:
        return cls(
            len(data),
            {"sha256": hashlib.sha256(data).digest(), "sha512": hashlib.sha512(data).digest()},
        )

    def to_json(self) -> dict[str, Any]:
        return {"hashes": {a: b64(h) for a, h in self.hashes.items()}, "length": self.length}

    def mismatch(self, data: bytes) -> str | None:
        """Why `data` is not the file described, or None when it is."""
        if self.length != len(data):
            return f"length {self.length} does not match the {len(data)} bytes stored"
        known = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
        checked = 0
        for alg, expected in self.hashes.items():
            if alg in known:
                checked += 1
                if known[alg](data).digest() != expected:
                    return f"{alg} hash does not match"
        return None if checked else "no supported hash (sha256 or sha512)"


@dataclass(frozen=True)
class Delegation:
    name: str
    keys: RoleKeys
    paths: tuple[str, ...]

    def allows(self, target: str) -> bool:
        """Notary matches delegation paths as prefixes ("" allows everything)."""
        return any(target.startswith(p) for p in self.paths)


def public_identity(key: PublicKey) -> bytes:
    """The public key itself (SubjectPublicKeyInfo DER, raw for Ed25519), whatever form the
    metadata wraps it in: what makes two key IDs the same signer. Re-encoded, so a compressed
    and an uncompressed EC point of one key are one signer too."""
    if key.keytype == "ed25519":
        return b"ed25519:" + key.public
    try:
        crypto = key.crypto_key()
    except KeyError_:
        return b"unusable:" + key.public
    der: bytes = crypto.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key.keytype.removesuffix("-x509").encode() + b":" + der


@dataclass(frozen=True)
class Signed:
    """A parsed metadata file: the envelope, the common fields and the exact bytes."""

    role: str
    data: bytes
    body: dict[str, Any]
    signatures: tuple[Signature, ...]
    version: int
    expires: dt.datetime
    canonical: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def valid_signers(self, role_keys: RoleKeys, keys: dict[str, PublicKey]) -> set[str]:
        """IDs of role keys whose signature over the canonical `signed` verifies, one per
        public key: the same private key listed as `ecdsa` and in two `ecdsa-x509`
        certificates has three key IDs but counts once toward a threshold."""
        good: set[str] = set()
        seen: set[bytes] = set()
        for sig in self.signatures:
            key = keys.get(sig.keyid)
            if sig.keyid not in role_keys.keyids or key is None or sig.keyid in good:
                continue
            identity = public_identity(key)
            if identity in seen:
                continue
            if verify(key, sig.method, sig.sig, self.canonical):
                good.add(sig.keyid)
                seen.add(identity)
        return good

    def meets(self, role_keys: RoleKeys, keys: dict[str, PublicKey]) -> bool:
        return len(self.valid_signers(role_keys, keys)) >= role_keys.threshold


def parse_signed(role: str, data: bytes) -> Signed:
    """Parse the envelope and common fields of `role`'s metadata; check `_type`."""
    try:
        doc = jsonbounds.loads(data, what=role)
    except jsonbounds.JSONBoundsError as exc:
        raise MetadataError(str(exc)) from None
    doc = _obj(doc, role)
    body = _obj(doc.get("signed"), f"{role}.signed")
    sigs_raw = doc.get("signatures")
    if not isinstance(sigs_raw, list):
        raise MetadataError(f"{role}.signatures must be a list")
    signatures = []
    for i, s in enumerate(sigs_raw):
        s = _obj(s, f"{role}.signatures[{i}]")
        keyid, method = s.get("keyid"), s.get("method")
        if not isinstance(keyid, str) or not isinstance(method, str):
            raise MetadataError(f"{role}.signatures[{i}] needs keyid and method strings")
        try:
            signatures.append(Signature(keyid, method, unb64(s.get("sig"))))
        except KeyError_ as exc:
            raise MetadataError(f"{role}.signatures[{i}].sig: {exc}") from None
    want = role_type(role)
    if body.get("_type") != want:
        raise MetadataError(f"{role} must have _type {want!r}, not {body.get('_type')!r}")
    try:
        canonical = canonical_json(body)
    except (KeyError_, TypeError, ValueError) as exc:
        raise MetadataError(f"{role}.signed cannot be canonicalised: {exc}") from None
    return Signed(
        role=role,
        data=data,
        body=body,
        signatures=tuple(signatures),
        version=_version(body.get("version"), role),
        expires=parse_time(body.get("expires")),
        canonical=canonical,
    )


@dataclass(frozen=True)
class Root:
    signed: Signed
    keys: dict[str, PublicKey]
    roles: dict[str, RoleKeys]

    def role_keys(self, role: str) -> dict[str, PublicKey]:
        return {k: self.keys[k] for k in self.roles[role].keyids}


def parse_root(data: bytes) -> Root:
    s = parse_signed(ROOT, data)
    keys = parse_keys(s.body.get("keys"), "root.keys")
    roles_raw = _obj(s.body.get("roles"), "root.roles")
    roles = {}
    for name in BASE_ROLES:
        if name not in roles_raw:
            raise MetadataError(f"root.roles lacks the {name} role")
        roles[name] = RoleKeys.from_json(roles_raw[name], f"root.roles.{name}", keys)
    return Root(s, keys, roles)


@dataclass(frozen=True)
class Targets:
    signed: Signed
    targets: dict[str, FileMeta]
    delegation_keys: dict[str, PublicKey]
    delegations: dict[str, Delegation]


def parse_targets(role: str, data: bytes) -> Targets:
    s = parse_signed(role, data)
    targets = {
        name: FileMeta.from_json(meta, f"{role}.targets[{name}]")
        for name, meta in _obj(s.body.get("targets") or {}, f"{role}.targets").items()
    }
    dele = _obj(s.body.get("delegations") or {}, f"{role}.delegations")
    keys = parse_keys(dele.get("keys") or {}, f"{role}.delegations.keys")
    roles_raw = dele.get("roles") or []  # Go writes an empty list as null
    if not isinstance(roles_raw, list):
        raise MetadataError(f"{role}.delegations.roles must be a list")
    delegations: dict[str, Delegation] = {}
    for i, r in enumerate(roles_raw):
        what = f"{role}.delegations.roles[{i}]"
        r = _obj(r, what)
        name = r.get("name")
        if not isinstance(name, str) or not is_delegation(name) or parent_role(name) != role:
            raise MetadataError(f"{what}: {name!r} is not a valid direct child of {role}")
        if name in delegations:
            raise MetadataError(f"{what}: {name} is delegated twice")
        paths = _str_list(r.get("paths") or [], f"{what}.paths")
        delegations[name] = Delegation(name, RoleKeys.from_json(r, what, keys), paths)
    return Targets(s, targets, keys, delegations)


@dataclass(frozen=True)
class MetaMap:
    """Snapshot or timestamp: role name → FileMeta."""

    signed: Signed
    meta: dict[str, FileMeta]


def parse_meta_map(role: str, data: bytes) -> MetaMap:
    s = parse_signed(role, data)
    meta = {
        name: FileMeta.from_json(m, f"{role}.meta[{name}]")
        for name, m in _obj(s.body.get("meta"), f"{role}.meta").items()
    }
    return MetaMap(s, meta)
