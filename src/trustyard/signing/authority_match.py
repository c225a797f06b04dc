"""Which granted key made each signature of an image, and whether its grant covers the repository.

Issue 20 part 2: the policy kind `authority` (registry side, `registry/policy_authority.py`) and
`trustyard verify --authority-roots` (client side, `cli/verify.py`) find an image's signatures
their own way (the registry through its `PolicyContext`, the client over HTTP) and both judge
them here, so the two can never disagree about a signature.

A signature counts only when it verifies with the *granted* public key: cosign signatures name
no key, so they are checked against every EC key the statements name; simple signatures
(OpenPGP) against the granted keys whose fingerprint (or a subkey's) they name; JWS, ir-sign and
Notary signatures carry or name their key, which must be byte-for-byte (SPKI) the granted one.
Keys that statements name but do not grant now only serve to name the signer in a refusal.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.authority.model import GrantedKey, Graph
from trustyard.authority.statements import StatementError
from trustyard.authority.statements import parse as parse_statement
from trustyard.crypto.ecdsa import verify_digest
from trustyard.crypto.jws import JwsSigner
from trustyard.crypto.keyid import libtrust_kid, spki_der
from trustyard.signing import annotations as ann
from trustyard.signing import cosign
from trustyard.signing.errors import SigningError
from trustyard.signing.simplesign import (
    check_matches,
    claimed_key_ids,
    inspect_atomic,
    show_fingerprints,
    verify_with_gpg,
)

MAX_GPG_CANDIDATES = 8  # granted OpenPGP keys tried per simple signature (each one a gpg run)


@dataclass(frozen=True)
class Verdict:
    """One signature: where it was found, the key that made it (if known) and why it counts or not."""

    kind: str  # cosign | simple-signing | annotations | jws | notary
    where: str
    key_id: str | None
    verified: bool
    reason: str
    grant: GrantedKey | None = None

    @property
    def authorized(self) -> bool:
        return self.grant is not None

    def to_json(self) -> dict[str, Any]:
        """The `trustyard verify --json` shape."""
        g = self.grant
        return {
            "kind": self.kind,
            "where": self.where,
            "key_id": self.key_id,
            "verified": self.verified,
            "authorized": self.authorized,
            "user": g.user if g else None,
            "namespaces": list(g.namespaces) if g else [],
            "statement": g.statement if g else None,
            "reason": self.reason,
        }


def _spki_of(grant: GrantedKey) -> bytes | None:
    try:
        key = serialization.load_pem_public_key(grant.public)
    except (ValueError, TypeError):
        return None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class GrantedKeys:
    """The keys of one `Graph`, in the forms each kind verifies with (parsed once per Graph)."""

    def __init__(
        self,
        graph: Graph,
        known: Iterable[tuple[str, str, bytes]] = (),
        now: Callable[[], datetime] | None = None,
    ) -> None:
        """`known`: (key type, key ID, public) of keys that statements name without granting
        them now (revoked, expired, other roots): tried after the granted ones only so that a
        refusal can name the signer and say why its key does not count."""
        self.graph = graph
        self._now = now or (lambda: datetime.now(UTC))
        self._spki: dict[str, bytes | None] = {}
        self._pgp_ids: dict[bytes, set[str]] = {}
        # cosign names keys by sha256 of the SPKI; the authority by libtrust KeyID.
        self.ec: dict[str, tuple[ec.EllipticCurvePublicKey, str]] = {}
        self.openpgp = [g for g in graph.grants if g.key_type == "openpgp"]
        pkix = [(g.key_id, g.public) for g in graph.grants if g.key_type == "pkix"]
        pkix += [(kid, public) for kind, kid, public in known if kind == "pkix"]
        for kid, public in pkix:
            try:
                key = cosign.load_public_key(public, f"key {kid}")
            except SigningError:
                continue  # RSA or another curve: cosign signatures cannot be made with it
            self.ec.setdefault(cosign.key_id(key), (key, kid))
        self.key_ids = {g.key_id for g in graph.grants} | {k for _, k, _ in known}
        self.key_ids |= {r.key_id for r in graph.refused if r.key_id}

    def openpgp_ids(self, grant: GrantedKey) -> set[str]:
        """The 16-hex key IDs of a granted OpenPGP key and its subkeys (what signatures name);
        read once per Graph with `gpg --show-keys`."""
        if grant.public not in self._pgp_ids:
            try:
                fprs = show_fingerprints(grant.public)
            except SigningError:
                fprs = [grant.key_id]
            self._pgp_ids[grant.public] = {f.upper()[-16:] for f in [grant.key_id, *fprs]}
        return self._pgp_ids[grant.public]

    def ec_keys(self) -> list[ec.EllipticCurvePublicKey]:
        return [key for key, _ in self.ec.values()]

    def spki(self, grant: GrantedKey) -> bytes | None:
        if grant.statement + grant.key_id not in self._spki:
            self._spki[grant.statement + grant.key_id] = _spki_of(grant)
        return self._spki[grant.statement + grant.key_id]

    def judge(
        self, kind: str, where: str, key_id: str, repository: str, spki: bytes | None = None
    ) -> Verdict:
        """A signature verified with the key `key_id` (whose SPKI DER is `spki` when the
        signature carries its key): the grant that authorizes it for `repository`, or why none."""
        now = self._now()
        grants = [g for g in self.graph.keys_for(repository) if g.key_id == key_id]
        if spki is not None:
            grants = [g for g in grants if self.spki(g) == spki]
        live = [g for g in grants if g.expires is None or g.expires > now]
        if live:
            g = live[0]
            why = (
                f"{kind} signature by {key_id}, granted to {g.user} for "
                f"{', '.join(g.namespaces)} by statement {g.statement}"
            )
            return Verdict(kind, where, key_id, True, why, g)
        if grants:
            why = f"the grant of key {key_id} (statement {grants[0].statement}) expired"
        else:
            why = self.graph.why_not(key_id, repository)
        return Verdict(kind, where, key_id, True, f"{kind} signature by {key_id}: {why}")


def judge_cosign(keys: GrantedKeys, check: cosign.Check, where: str, repository: str) -> Verdict:
    """A cosign entry already checked (`cosign.check_simplesigning`/`check_bundle`) against
    `keys.ec_keys()`: verified means one granted key made it."""
    if check.status == "verified" and check.signer in keys.ec:
        _, kid = keys.ec[check.signer]
        return keys.judge("cosign", where, kid, repository)
    if not keys.ec:
        why = "the authority grants no EC key a cosign signature could be made with"
    elif check.status == "failed" and ("trusted key" in check.reason or "verify" in check.reason):
        why = "made by no key the authority grants"
    else:
        why = check.reason or check.status
    return Verdict("cosign", where, None, False, f"cosign signature: {why}")


def judge_simple(
    keys: GrantedKeys, content: bytes, digest: str, repository: str, where: str
) -> Verdict:
    """A containers simple signature: gpg must verify it with a granted OpenPGP key it names.
    Blocking (gpg runs); the registry calls it in a thread."""
    kind = "simple-signing"
    try:
        check_matches(inspect_atomic(content).payload, digest)
    except SigningError as exc:
        return Verdict(kind, where, None, False, f"simple signature: {exc}")
    claimed = claimed_key_ids(content)
    by_primary = [g for g in keys.openpgp if g.key_id.upper()[-16:] in claimed]
    candidates = by_primary or [g for g in keys.openpgp if keys.openpgp_ids(g) & set(claimed)]
    if not candidates:
        # Name the key by the full fingerprint when a statement knows it.
        full = [k for k in sorted(keys.key_ids) if k.upper()[-16:] in claimed]
        shown = next(iter(full or claimed), None)
        why = keys.graph.why_not(shown, repository) if shown else "names no signing key"
        return Verdict(kind, where, shown, False, f"simple signature: {why}")
    failures = []
    publics = list(dict.fromkeys(g.public for g in candidates))[:MAX_GPG_CANDIDATES]
    with tempfile.TemporaryDirectory(prefix="ty-authority-") as tmp:
        for i, public in enumerate(publics):
            path = Path(tmp) / f"key{i}.asc"
            path.write_bytes(public)
            try:
                verify_with_gpg(content, [path])
            except SigningError as exc:
                failures.append(str(exc))
                continue
            # Verified with this key alone: made by it (or one of its subkeys).
            granted = next(g for g in candidates if g.public == public)
            return keys.judge(kind, where, granted.key_id, repository)
    return Verdict(
        kind, where, claimed[0], False, f"simple signature: does not verify ({failures[0]})"
    )


def judge_annotations(
    keys: GrantedKeys,
    annotations: Mapping[str, str],
    config_sha384: bytes | None,
    repository: str,
    where: str,
) -> list[Verdict]:
    """ir-sign annotations: each slot's vendor key must have signed the config (SHA-384 given,
    None when the config blob could not be read) and be a granted key. The root CA endorsement
    is not needed: the authority's grant replaces it."""
    out = []
    for slot in ann.slots(annotations):
        at = f"{where} [{slot.label}]"
        try:
            sig = ann.read_slot(annotations, slot)
            vendor = serialization.load_der_public_key(sig.vendor_pub)
            if not isinstance(vendor, ec.EllipticCurvePublicKey):
                raise SigningError("vendor key is not an EC key")
        except (SigningError, ValueError) as exc:
            out.append(Verdict("annotations", at, None, False, f"malformed signature: {exc}"))
            continue
        kid = libtrust_kid(vendor)
        if config_sha384 is None:
            out.append(Verdict("annotations", at, kid, False, "config blob unreadable"))
            continue
        try:
            verify_digest(vendor, sig.config_signature, config_sha384, "config signature")
        except SigningError:
            why = f"config signature does not verify with vendor key {kid}"
            out.append(Verdict("annotations", at, kid, False, why))
            continue
        out.append(keys.judge("annotations", at, kid, repository, spki_der(vendor)))
    return out


def judge_jws(
    keys: GrantedKeys, signers: Iterable[JwsSigner], repository: str, where: str
) -> list[Verdict]:
    """Schema 1 signers (`verify_schema1`), each already verified with the key its header
    carries: that key must be the granted one."""
    return [keys.judge("jws", where, s.key_id, repository, spki_der(s.public_key)) for s in signers]


def statement_keys(statements: Iterable[bytes]) -> list[tuple[str, str, bytes]]:
    """(key type, key ID, public) of every key the statements name (their own signature
    checked, no trust decided): the `known` keys of `GrantedKeys`."""
    out: list[tuple[str, str, bytes]] = []
    for data in statements:
        try:
            st = parse_statement(data)
        except StatementError:
            continue
        if st.type == "grant" and st.key_type is not None and st.key_id is not None:
            out.append((st.key_type, st.key_id, st.key_public))
    return out


def summarize(verdicts: list[Verdict]) -> tuple[bool, str, str | None]:
    """(ok, reason, signer): ok when one signature is authorized; the reason names its signer,
    or else every signature and why it does not count."""
    for v in verdicts:
        if v.authorized:
            return True, v.reason, v.key_id
    if not verdicts:
        return False, "no signatures", None
    shown = "; ".join(f"{v.where}: {v.reason}" for v in verdicts[:6])
    more = f" (and {len(verdicts) - 6} more)" if len(verdicts) > 6 else ""
    return False, f"no signature is authorized: {shown}{more}", None
