"""Verify a Notary collection as a client does: root (pins, rotation), timestamp, snapshot,
targets and delegations, then look targets up. Pure: the caller fetches the files.

Used by the trust client (`trustyard trust verify`) and by the registry's `notary` policy kind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from trustyard.trust import model as m
from trustyard.trust.keys import PublicKey
from trustyard.trust.pinning import PinningError, RootTrust, TrustPinning, check_root


class VerifyError(Exception):
    """The collection does not verify; the message says which file and why."""


@dataclass(frozen=True)
class TargetHit:
    role: str
    meta: m.FileMeta
    signers: tuple[str, ...]  # key IDs that signed the role

    @property
    def sha256(self) -> str | None:
        h = self.meta.hashes.get("sha256")
        return h.hex() if h is not None else None


@dataclass
class Collection:
    gun: str
    root: m.Root
    trust: RootTrust
    targets: dict[str, m.Targets] = field(default_factory=dict)
    signers: dict[str, tuple[str, ...]] = field(default_factory=dict)
    keys: dict[str, dict[str, PublicKey]] = field(default_factory=dict)  # role → its keys
    snapshot: m.MetaMap | None = None
    warnings: list[str] = field(default_factory=list)
    raw: dict[str, bytes] = field(default_factory=dict)  # the files as fetched

    def lookup(self, name: str) -> list[TargetHit]:
        """Every verified role that signs `name`, in Docker's order: targets/releases, targets,
        then the other delegations by name."""
        order = sorted(self.targets, key=lambda r: (r != "targets/releases", r != m.TARGETS, r))
        return [
            TargetHit(role, self.targets[role].targets[name], self.signers[role])
            for role in order
            if name in self.targets[role].targets
        ]

    def by_digest(self, sha256_hex: str) -> list[tuple[str, TargetHit]]:
        found = []
        for role in sorted(self.targets):
            for name, meta in self.targets[role].targets.items():
                h = meta.hashes.get("sha256")
                if h is not None and h.hex() == sha256_hex:
                    found.append((name, TargetHit(role, meta, self.signers[role])))
        return found


def _parse(role: str, data: bytes) -> m.Signed:
    try:
        return m.parse_signed(role, data)
    except m.MetadataError as exc:
        raise VerifyError(str(exc)) from None


def _fresh(signed: m.Signed, now: dt.datetime, gun: str) -> None:
    if signed.expires < now:
        raise VerifyError(
            f"{signed.role} metadata of {gun} expired on {signed.expires:%Y-%m-%d %H:%M}Z"
        )


def verify_root_update(old: m.Root, new: m.Root) -> None:
    """A new root must be signed by the trusted root's keys too, and not be older."""
    if new.signed.version < old.signed.version:
        raise VerifyError(
            f"root version {new.signed.version} is older than the trusted version "
            f"{old.signed.version} (rollback)"
        )
    if new.signed.data == old.signed.data:
        return
    if not new.signed.meets(old.roles[m.ROOT], old.keys):
        raise VerifyError(
            "the new root is not signed by the previously trusted root keys (a root rotation "
            "must be signed by the old and the new root)"
        )


def verify_collection(
    gun: str,
    files: Mapping[str, bytes],
    pinning: TrustPinning,
    *,
    trusted_root: bytes | None = None,
    now: dt.datetime | None = None,
) -> Collection:
    now = now or dt.datetime.now(dt.UTC)
    if m.ROOT not in files:
        raise VerifyError(f"no trust data for {gun} (root.json not found)")
    try:
        root = m.parse_root(files[m.ROOT])
    except m.MetadataError as exc:
        raise VerifyError(f"root of {gun}: {exc}") from None
    if trusted_root is not None:
        try:
            old = m.parse_root(trusted_root)
        except m.MetadataError as exc:
            raise VerifyError(f"the cached trusted root of {gun} is unreadable: {exc}") from None
        verify_root_update(old, root)
    try:
        trust = check_root(
            gun,
            root,
            pinning,
            tofu_ok=trusted_root is not None or not pinning.disable_tofu,
            now=now,
        )
    except PinningError as exc:
        raise VerifyError(str(exc)) from None
    _fresh(root.signed, now, gun)
    coll = Collection(gun, root, trust, warnings=list(trust.warnings), raw=dict(files))

    snapshot: m.MetaMap | None = None
    if m.TIMESTAMP in files:
        ts = _meta_map(m.TIMESTAMP, files[m.TIMESTAMP], root, now, gun)
        snap_meta = ts.meta.get(m.SNAPSHOT)
        if m.SNAPSHOT in files and snap_meta is not None:
            why = snap_meta.mismatch(files[m.SNAPSHOT])
            if why:
                raise VerifyError(f"snapshot of {gun} does not match the timestamp: {why}")
    if m.SNAPSHOT in files:
        snapshot = _meta_map(m.SNAPSHOT, files[m.SNAPSHOT], root, now, gun)
        for role in (m.ROOT, m.TARGETS):
            meta = snapshot.meta.get(role)
            if role in files and meta is not None and (why := meta.mismatch(files[role])):
                raise VerifyError(f"{role} of {gun} does not match the snapshot: {why}")
    coll.snapshot = snapshot
    if m.TARGETS not in files:
        raise VerifyError(f"no targets metadata for {gun}")
    try:
        top = m.parse_targets(m.TARGETS, files[m.TARGETS])
    except m.MetadataError as exc:
        raise VerifyError(f"targets of {gun}: {exc}") from None
    signers = top.signed.valid_signers(root.roles[m.TARGETS], root.keys)
    if len(signers) < root.roles[m.TARGETS].threshold:
        raise VerifyError(f"targets of {gun} is not signed by the root's targets key")
    _fresh(top.signed, now, gun)
    coll.targets[m.TARGETS] = top
    coll.signers[m.TARGETS] = tuple(sorted(signers))
    coll.keys[m.TARGETS] = root.role_keys(m.TARGETS)
    _walk_delegations(coll, top, files, snapshot, now)
    return coll


def _meta_map(role: str, data: bytes, root: m.Root, now: dt.datetime, gun: str) -> m.MetaMap:
    try:
        parsed = m.parse_meta_map(role, data)
    except m.MetadataError as exc:
        raise VerifyError(f"{role} of {gun}: {exc}") from None
    if not parsed.signed.meets(root.roles[role], root.keys):
        raise VerifyError(f"{role} of {gun} is not signed by the root's {role} key")
    _fresh(parsed.signed, now, gun)
    return parsed


def _walk_delegations(
    coll: Collection,
    parent: m.Targets,
    files: Mapping[str, bytes],
    snapshot: m.MetaMap | None,
    now: dt.datetime,
) -> None:
    for name, dele in parent.delegations.items():
        if name not in files:
            continue
        problem = None
        if snapshot is not None and name in snapshot.meta:
            problem = snapshot.meta[name].mismatch(files[name])
        try:
            child = m.parse_targets(name, files[name])
        except m.MetadataError as exc:
            problem = str(exc)
        if problem is None:
            signers = child.signed.valid_signers(dele.keys, parent.delegation_keys)
            if len(signers) < dele.keys.threshold:
                problem = f"signed by {len(signers)} of its keys, threshold {dele.keys.threshold}"
            elif child.signed.expires < now:
                problem = f"expired on {child.signed.expires:%Y-%m-%d}"
        if problem is not None:
            coll.warnings.append(f"delegation {name} ignored: {problem}")
            continue
        outside = [t for t in child.targets if not dele.allows(t)]
        kept = {t: v for t, v in child.targets.items() if dele.allows(t)}
        if outside:
            coll.warnings.append(f"delegation {name}: targets outside its paths ignored")
        coll.targets[name] = m.Targets(child.signed, kept, child.delegation_keys, child.delegations)
        coll.signers[name] = tuple(sorted(signers))
        coll.keys[name] = {k: parent.delegation_keys[k] for k in dele.keys.keyids}
        _walk_delegations(coll, coll.targets[name], files, snapshot, now)
