"""Root trust without TOFU: Notary's `trust_pinning` and its root certificate rules.

Notary (trustpinning/trustpin.go, certs.go) trusts a collection's root by, in order: pinned
certificate IDs for the GUN (`certs`), a CA whose prefix matches the GUN (`ca`), else trust on
first use unless `disable_tofu`. Root certificates must carry CN = GUN, be current, not be a CA,
and not be signed with SHA-1. We add:

* pins may name the *canonical* key ID (sha256 of the canonical JSON of the public key as a plain
  `ecdsa`/`rsa` key), so one pin covers every per-repository certificate of one root key;
* `certs` keys may end in `*` (prefix pins), the longest match wins, as for `ca`;
* pins are applied to every root, not only at bootstrap: a rotation to a key that is not pinned
  or not chained to the pinned CA is refused (Notary checks pins only once, notary#735).

Pure apart from reading the configured CA files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from trustyard.crypto.notary_keys import KeyError_, PublicKey, canonical_json
from trustyard.trust.model import Root

EXPIRY_WARNING = dt.timedelta(days=182)  # Notary warns within six months of expiry


class PinningError(Exception):
    """A root is not trusted; the message says why and how to pin it."""


@dataclass(frozen=True)
class TrustPinning:
    """Notary's client `trust_pinning`: certs (GUN/prefix* → key IDs), ca (prefix → PEM file)."""

    certs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ca: dict[str, Path] = field(default_factory=dict)
    disable_tofu: bool = False

    @classmethod
    def from_json(cls, value: Any, base_dir: Path | None = None) -> TrustPinning:
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise PinningError("trust_pinning must be an object with certs, ca, disable_tofu")
        certs_raw = value.get("certs") or {}
        ca_raw = value.get("ca") or {}
        if not isinstance(certs_raw, dict) or not isinstance(ca_raw, dict):
            raise PinningError("trust_pinning.certs and trust_pinning.ca must be objects")
        certs: dict[str, tuple[str, ...]] = {}
        for gun, ids in certs_raw.items():
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise PinningError(f"trust_pinning.certs[{gun!r}] must be a list of key IDs")
            certs[gun] = tuple(i.lower() for i in ids)
        ca: dict[str, Path] = {}
        for prefix, path in ca_raw.items():
            if not isinstance(path, str):
                raise PinningError(f"trust_pinning.ca[{prefix!r}] must be a file path")
            p = Path(path).expanduser()
            ca[prefix] = p if p.is_absolute() or base_dir is None else base_dir / p
        disable = value.get("disable_tofu", False)
        if not isinstance(disable, bool):
            raise PinningError("trust_pinning.disable_tofu must be true or false")
        return cls(certs, ca, disable)

    def merged(self, extra_certs: dict[str, tuple[str, ...]]) -> TrustPinning:
        certs = dict(self.certs)
        for gun, ids in extra_certs.items():
            certs[gun] = tuple(dict.fromkeys((*certs.get(gun, ()), *ids)))
        return TrustPinning(certs, dict(self.ca), self.disable_tofu)

    def pinned_ids(self, gun: str) -> tuple[str, ...] | None:
        if gun in self.certs:
            return self.certs[gun]
        best = _longest_prefix(gun, [k[:-1] for k in self.certs if k.endswith("*")])
        return None if best is None else self.certs[best + "*"]

    def ca_file(self, gun: str) -> Path | None:
        best = _longest_prefix(gun, list(self.ca))
        return None if best is None else self.ca[best]

    def is_pinned(self, gun: str) -> bool:
        return self.pinned_ids(gun) is not None or self.ca_file(gun) is not None


def _longest_prefix(gun: str, prefixes: list[str]) -> str | None:
    matching = [p for p in prefixes if gun.startswith(p)]
    return max(matching, key=len) if matching else None


def how_to_pin(gun: str) -> str:
    return (
        f'pin it: add "trust_pinning": {{"certs": {{"{gun}": ["<root key ID>"]}}}} or '
        f'{{"ca": {{"{gun}": "/path/to/ca.pem"}}}} to the client config, or run '
        f"`trustyard trust key import ROOT-CERT --gun {gun}` with a root certificate or public "
        "key obtained out of band (`trustyard trust audit` prints root key IDs)"
    )


# -- keys and certificates -----------------------------------------------------------------------
def spki_der(public: Any) -> bytes:
    der: bytes = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def public_key_of(public: Any) -> PublicKey:
    """The plain Notary key (`ecdsa`, `rsa` or `ed25519`) of a `cryptography` public key."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PublicKey("ed25519", raw)
    if isinstance(public, ec.EllipticCurvePublicKey):
        return PublicKey("ecdsa", spki_der(public))
    if isinstance(public, rsa.RSAPublicKey):
        return PublicKey("rsa", spki_der(public))
    raise KeyError_(f"unsupported public key type {type(public).__name__}")


def canonical_key_id(key: PublicKey) -> str:
    """The key ID over the public key alone (Notary's `CanonicalKeyID`): an x509 key's ID changes
    with every certificate, this one does not."""
    if not key.keytype.endswith("-x509"):
        return key.key_id
    return public_key_of(key.crypto_key()).key_id


def cert_bundle(key: PublicKey) -> list[x509.Certificate]:
    """Leaf first, then any intermediates, of an `*-x509` key."""
    try:
        return x509.load_pem_x509_certificates(key.public)
    except ValueError as exc:
        raise PinningError(f"root key {key.key_id[:12]} is not a PEM certificate: {exc}") from None


def cert_key(certs: list[x509.Certificate]) -> PublicKey:
    """The `*-x509` metadata key for a certificate bundle (leaf first)."""
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    leaf = certs[0].public_key()
    keytype = "ecdsa-x509" if isinstance(leaf, ec.EllipticCurvePublicKey) else "rsa-x509"
    return PublicKey(keytype, pem)


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _cn_matches(cn: str, gun: str) -> bool:
    return cn == gun or (cn.endswith("*") and gun.startswith(cn[:-1]))


def check_leaf(gun: str, cert: x509.Certificate, now: dt.datetime) -> list[str]:
    """Refuse what Notary refuses (CN, validity, CA leaf, SHA-1); return warnings."""
    cn = common_name(cert)
    if not _cn_matches(cn, gun):
        raise PinningError(
            f"root certificate CN {cn!r} is not the GUN {gun!r} (Notary requires CN = GUN)"
        )
    _check_validity(cert, now, f"root certificate for {gun}")
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if bc.ca:
            raise PinningError(f"root certificate for {gun} is a CA certificate (not allowed)")
    except x509.ExtensionNotFound:
        pass
    algorithm = cert.signature_hash_algorithm
    if isinstance(algorithm, hashes.SHA1):
        raise PinningError(f"root certificate for {gun} is signed with SHA-1 (not allowed)")
    left = cert.not_valid_after_utc - now
    if left < EXPIRY_WARNING:
        return [f"root certificate for {gun} expires in {left.days} days"]
    return []


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if cert.not_valid_after_utc < now:
        raise PinningError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    if cert.not_valid_before_utc > now:
        raise PinningError(f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")


def load_ca_file(path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise PinningError(f"cannot read pinned CA file {path}: {exc.strerror}") from None
    except ValueError:
        raise PinningError(f"pinned CA file {path} holds no PEM certificate") from None
    return certs


def chains_to(
    certs: list[x509.Certificate], anchors: list[x509.Certificate], now: dt.datetime
) -> bool:
    """True when the leaf chains (through the bundled intermediates) to one of `anchors`, every
    certificate on the way being current. Raises PinningError for an expired CA on the path."""
    leaf, pool = certs[0], certs[1:]
    current, seen = leaf, 0
    while seen <= len(pool):
        for anchor in anchors:
            if _issued_by(current, anchor):
                _check_validity(anchor, now, f"pinned CA {common_name(anchor)!r}")
                return True
        parent = next((c for c in pool if _issued_by(current, c)), None)
        if parent is None:
            return False
        _check_validity(parent, now, f"intermediate CA {common_name(parent)!r}")
        current, seen = parent, seen + 1
    return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def cert_sha256(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class RootTrust:
    """Why a root is trusted: `certs`, `ca` or `tofu`, which keys, and warnings."""

    how: str
    key_ids: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def check_root(
    gun: str,
    root: Root,
    pinning: TrustPinning,
    *,
    tofu_ok: bool,
    now: dt.datetime | None = None,
) -> RootTrust:
    """Decide whether `root` is an acceptable root for `gun` under `pinning`.

    `tofu_ok` is False when the caller already trusts an earlier root (then the root must be
    signed by it, which the caller checks) or when TOFU is disabled. The root must be signed to
    its threshold by keys that pass the certificate rules and the pin.
    """
    now = now or dt.datetime.now(dt.UTC)
    pinned = pinning.pinned_ids(gun)
    ca_path = pinning.ca_file(gun)
    anchors = load_ca_file(ca_path) if pinned is None and ca_path is not None else None
    if pinned is None and anchors is None and not tofu_ok:
        if pinning.disable_tofu:
            raise PinningError(
                f"no trust pin for {gun} and trust on first use is disabled "
                f"(disable_tofu): {how_to_pin(gun)}"
            )
    accepted: dict[str, PublicKey] = {}
    warnings: list[str] = []
    problems: list[str] = []
    for keyid in root.roles["root"].keyids:
        key = root.keys[keyid]
        try:
            if key.keytype.endswith("-x509"):
                certs = cert_bundle(key)
                warnings += check_leaf(gun, certs[0], now)
            else:
                certs = []
            if pinned is not None:
                if keyid not in pinned and canonical_key_id(key) not in pinned:
                    raise PinningError(
                        f"root key {keyid} (canonical {canonical_key_id(key)}) is not among "
                        f"the keys pinned for {gun}"
                    )
            elif anchors is not None:
                if not certs:
                    raise PinningError(f"root key {keyid} is not a certificate; a CA is pinned")
                if not chains_to(certs, anchors, now):
                    raise PinningError(
                        f"root certificate {common_name(certs[0])!r} (key {keyid[:12]}) is not "
                        f"issued by the CA pinned for {gun} ({ca_path})"
                    )
            accepted[keyid] = key
        except (PinningError, KeyError_) as exc:
            problems.append(str(exc))
    role = root.roles["root"]
    signers = root.signed.valid_signers(role, accepted)
    if len(signers) < role.threshold:
        why = "; ".join(problems) or "its signatures do not verify with its own root keys"
        raise PinningError(f"root of {gun} is not trusted: {why}")
    how = "certs" if pinned is not None else "ca" if anchors is not None else "tofu"
    return RootTrust(how, tuple(sorted(signers)), tuple(warnings))


def load_root_material(data: bytes, source: str) -> tuple[str, str]:
    """(canonical key ID, description) of a root certificate or public key file (PEM or DER)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
        return canonical_key_id(cert_key(certs)), f"certificate CN={common_name(certs[0])}"
    except ValueError:
        pass
    try:
        cert = x509.load_der_x509_certificate(data)
        return canonical_key_id(cert_key([cert])), f"certificate CN={common_name(cert)}"
    except ValueError:
        pass
    for pub_loader in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            return public_key_of(pub_loader(data)).key_id, "public key"
        except (ValueError, KeyError_):
            pass
    try:
        key = PublicKey.from_json(json.loads(data))
        return canonical_key_id(key), f"{key.keytype} key"
    except (ValueError, KeyError_, TypeError):
        pass
    raise PinningError(f"{source} is not a certificate or public key (PEM or DER)")


def cert_id(certs: list[x509.Certificate]) -> str:
    """The Notary key ID of a certificate bundle (what root.json lists)."""
    return hashlib.sha256(canonical_json(cert_key(certs).to_json())).hexdigest()
