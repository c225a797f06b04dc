"""Verify a Notary collection as a TUF client does, then look targets up. Pure: the caller
fetches the files and keeps the trusted copies.

The order is the TUF client workflow's, in Notary's dialect (no versions in snapshot/timestamp
meta, so the hash and length of each file are what bind it):

1. root: signed by the trusted root's keys along the rotation chain (each `N.root.json` signed by
   the previous root and by itself), pinned (`check_root`), not expired, not older than the
   trusted root and never a different file at the same version;
2. timestamp: required, signed by the root's timestamp keys, current, not rolled back, and it
   must name the snapshot by hash and length (a server that answers 404 for it freezes clients);
3. snapshot: required, matching the timestamp, signed, current, not rolled back, still naming
   every role the trusted snapshot named, and naming `targets` (and each delegation used) by hash
   and length;
4. targets, then delegations depth first: each file must match the snapshot, be signed to its
   threshold by distinct public keys and be current; a target counts only when every delegation
   on its chain allows its path (a child cannot widen its parent).

A delegation the snapshot does not name is skipped, and one that is expired or under its
threshold is ignored with a warning, as the notary client does; one the snapshot names but the
server withholds or alters fails the whole collection.

Used by the trust client (`trustyard trust verify`) and by the registry's `notary` policy kind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trustyard.crypto.notary_keys import PublicKey
from trustyard.trust import model as m
from trustyard.trust.client.pinning import PinningError, RootTrust, TrustPinning, check_root


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
    # role → the delegations from `targets` down to it (empty for `targets`)
    chains: dict[str, tuple[m.Delegation, ...]] = field(default_factory=dict)

    def allows(self, role: str, name: str) -> bool:
        """True when every delegation on `role`'s chain allows the target `name`."""
        chain = self.chains.get(role)
        return chain is not None and all(d.allows(name) for d in chain)

    def verified(self) -> dict[str, bytes]:
        """The files that verified (root, timestamp, snapshot, targets and the delegations
        used): what a client keeps as its trusted copies."""
        roles = [m.ROOT, m.TIMESTAMP, m.SNAPSHOT, *self.targets]
        return {r: self.raw[r] for r in roles if r in self.raw}

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
    """A new root must be signed by the trusted root's keys too, not be older, and not be a
    different file at the trusted version."""
    if new.signed.version < old.signed.version:
        raise VerifyError(
            f"root version {new.signed.version} is older than the trusted version "
            f"{old.signed.version} (rollback)"
        )
    if new.signed.data == old.signed.data:
        return
    if new.signed.version == old.signed.version:
        raise VerifyError(
            f"root version {new.signed.version} differs from the trusted root of the same "
            "version (a server may not change a published version)"
        )
    if not new.signed.meets(old.roles[m.ROOT], old.keys):
        raise VerifyError(
            "the new root is not signed by the previously trusted root keys (a root rotation "
            "must be signed by the old and the new root)"
        )


def _root_step(prev: m.Root, data: bytes, version: int, gun: str) -> m.Root:
    """One intermediate root of the rotation chain: exactly `version`, signed by the previous
    root's threshold and its own."""
    try:
        root = m.parse_root(data)
    except m.MetadataError as exc:
        raise VerifyError(f"root version {version} of {gun}: {exc}") from None
    if root.signed.version != version:
        raise VerifyError(f"{version}.root.json of {gun} holds root version {root.signed.version}")
    verify_root_update(prev, root)
    if not root.signed.meets(root.roles[m.ROOT], root.keys):
        raise VerifyError(f"root version {version} of {gun} is not signed by its own root keys")
    return root


def _not_rolled_back(role: str, new: m.Signed, trusted: bytes | None, gun: str) -> None:
    """Refuse an older version than the trusted copy, or another file at the same version."""
    if trusted is None:
        return
    try:
        old = m.parse_signed(role, trusted)
    except m.MetadataError as exc:
        raise VerifyError(f"the trusted copy of {role} of {gun} is unreadable: {exc}") from None
    if new.version < old.version:
        raise VerifyError(
            f"{role} of {gun} is version {new.version}, older than the trusted version "
            f"{old.version} (rollback: the server answers old metadata)"
        )
    if new.version == old.version and new.data != trusted:
        raise VerifyError(
            f"{role} of {gun} version {new.version} differs from the trusted copy of the same "
            "version (a server may not change a published version)"
        )


def verify_collection(
    gun: str,
    files: Mapping[str, bytes],
    pinning: TrustPinning,
    *,
    trusted_root: bytes | None = None,
    trusted: Mapping[str, bytes] | None = None,
    root_chain: Sequence[bytes] = (),
    now: dt.datetime | None = None,
) -> Collection:
    """Verify `files` (role → bytes as fetched) against the trusted copies (role → bytes the
    client verified before; `trusted_root` alone is the older form) and the intermediate roots
    `root_chain` (versions trusted+1 … current-1, in order)."""
    now = now or dt.datetime.now(dt.UTC)
    known = dict(trusted or {})
    if trusted_root is not None:
        known.setdefault(m.ROOT, trusted_root)
    root, trust = _verify_root(gun, files, pinning, known, root_chain, now)
    coll = Collection(gun, root, trust, warnings=list(trust.warnings), raw=dict(files))
    coll.snapshot = _verify_snapshot(gun, files, root, known, now)
    _verify_targets(coll, files, coll.snapshot, known, now)
    return coll


def _verify_root(
    gun: str,
    files: Mapping[str, bytes],
    pinning: TrustPinning,
    known: dict[str, bytes],
    root_chain: Sequence[bytes],
    now: dt.datetime,
) -> tuple[m.Root, RootTrust]:
    """The current root, reached from the trusted one through `root_chain` and accepted by the
    pins. When the timestamp or snapshot keys rotated, their trusted copies are dropped from
    `known` (their versions start anew)."""
    if m.ROOT not in files:
        raise VerifyError(f"no trust data for {gun} (root.json not found)")
    try:
        root = m.parse_root(files[m.ROOT])
    except m.MetadataError as exc:
        raise VerifyError(f"root of {gun}: {exc}") from None
    old: m.Root | None = None
    if m.ROOT in known:
        try:
            old = m.parse_root(known[m.ROOT])
        except m.MetadataError as exc:
            raise VerifyError(f"the cached trusted root of {gun} is unreadable: {exc}") from None
        prev = old
        for data in root_chain:
            prev = _root_step(prev, data, prev.signed.version + 1, gun)
        if root_chain and root.signed.version != prev.signed.version + 1:
            raise VerifyError(
                f"root version {root.signed.version} of {gun} does not follow the rotation "
                f"chain (last intermediate root is version {prev.signed.version})"
            )
        verify_root_update(prev, root)
        for role in (m.TIMESTAMP, m.SNAPSHOT):  # their keys rotated: start their versions anew
            if set(old.roles[role].keyids) != set(root.roles[role].keyids):
                known.pop(role, None)
    try:
        trust = check_root(
            gun,
            root,
            pinning,
            tofu_ok=old is not None or not pinning.disable_tofu,
            now=now,
        )
    except PinningError as exc:
        raise VerifyError(str(exc)) from None
    _fresh(root.signed, now, gun)
    return root, trust


def _verify_snapshot(
    gun: str, files: Mapping[str, bytes], root: m.Root, known: Mapping[str, bytes], now: dt.datetime
) -> m.MetaMap:
    """The timestamp, then the snapshot it names. Both are required: without them nothing
    says the rest is current."""
    if m.TIMESTAMP not in files:
        raise VerifyError(
            f"{gun} has no timestamp metadata: cannot tell whether its trust data is current "
            "(refusing, a server that withholds it could freeze this client on old data)"
        )
    ts = _meta_map(m.TIMESTAMP, files[m.TIMESTAMP], root, now, gun)
    _not_rolled_back(m.TIMESTAMP, ts.signed, known.get(m.TIMESTAMP), gun)
    snap_meta = ts.meta.get(m.SNAPSHOT)
    if snap_meta is None:
        raise VerifyError(f"timestamp of {gun} does not name the snapshot")
    if m.SNAPSHOT not in files:
        raise VerifyError(
            f"{gun} has no snapshot metadata although its timestamp names one (withheld)"
        )
    if why := snap_meta.mismatch(files[m.SNAPSHOT]):
        raise VerifyError(f"snapshot of {gun} does not match the timestamp: {why}")
    snapshot = _meta_map(m.SNAPSHOT, files[m.SNAPSHOT], root, now, gun)
    _not_rolled_back(m.SNAPSHOT, snapshot.signed, known.get(m.SNAPSHOT), gun)
    if m.SNAPSHOT in known:
        try:
            before = m.parse_meta_map(m.SNAPSHOT, known[m.SNAPSHOT]).meta
        except m.MetadataError as exc:
            raise VerifyError(f"the trusted snapshot of {gun} is unreadable: {exc}") from None
        dropped = sorted(set(before) - set(snapshot.meta))
        if dropped:
            raise VerifyError(
                f"snapshot of {gun} no longer names {', '.join(dropped[:5])} (rollback)"
            )
    if m.ROOT in snapshot.meta and (why := snapshot.meta[m.ROOT].mismatch(files[m.ROOT])):
        raise VerifyError(f"root of {gun} does not match the snapshot: {why}")
    return snapshot


def _verify_targets(
    coll: Collection,
    files: Mapping[str, bytes],
    snapshot: m.MetaMap,
    known: Mapping[str, bytes],
    now: dt.datetime,
) -> None:
    """The top-level targets (signed by the root's targets keys, named by the snapshot), then
    the delegations below it."""
    gun, root = coll.gun, coll.root
    if m.TARGETS not in files:
        raise VerifyError(f"no targets metadata for {gun}")
    if m.TARGETS not in snapshot.meta:
        raise VerifyError(f"snapshot of {gun} does not name the targets metadata")
    if why := snapshot.meta[m.TARGETS].mismatch(files[m.TARGETS]):
        raise VerifyError(f"targets of {gun} does not match the snapshot: {why}")
    try:
        top = m.parse_targets(m.TARGETS, files[m.TARGETS])
    except m.MetadataError as exc:
        raise VerifyError(f"targets of {gun}: {exc}") from None
    signers = top.signed.valid_signers(root.roles[m.TARGETS], root.keys)
    if len(signers) < root.roles[m.TARGETS].threshold:
        raise VerifyError(
            f"targets of {gun} is not signed by the root's targets keys ({len(signers)} of "
            f"threshold {root.roles[m.TARGETS].threshold} distinct keys)"
        )
    _not_rolled_back(m.TARGETS, top.signed, known.get(m.TARGETS), gun)
    _fresh(top.signed, now, gun)
    coll.targets[m.TARGETS] = top
    coll.signers[m.TARGETS] = tuple(sorted(signers))
    coll.keys[m.TARGETS] = root.role_keys(m.TARGETS)
    coll.chains[m.TARGETS] = ()
    _walk_delegations(coll, top, files, snapshot, known, now)


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
    snapshot: m.MetaMap,
    known: Mapping[str, bytes],
    now: dt.datetime,
) -> None:
    gun = coll.gun
    for name, dele in parent.delegations.items():
        if name in coll.targets:  # already reached (a name appears once per tree)
            continue
        if name not in snapshot.meta:
            coll.warnings.append(f"delegation {name} skipped: the snapshot does not name it")
            continue
        if name not in files:
            raise VerifyError(
                f"{name} of {gun} is named by the snapshot but the server did not send it"
            )
        if why := snapshot.meta[name].mismatch(files[name]):
            raise VerifyError(f"{name} of {gun} does not match the snapshot: {why}")
        try:
            child = m.parse_targets(name, files[name])
        except m.MetadataError as exc:
            raise VerifyError(f"{name} of {gun}: {exc}") from None
        problem = None
        signers = child.signed.valid_signers(dele.keys, parent.delegation_keys)
        if len(signers) < dele.keys.threshold:
            problem = (
                f"signed by {len(signers)} distinct keys of its threshold {dele.keys.threshold}"
            )
        elif child.signed.expires < now:
            problem = f"expired on {child.signed.expires:%Y-%m-%d}"
        if problem is not None:
            coll.warnings.append(f"delegation {name} ignored: {problem}")
            continue
        _not_rolled_back(name, child.signed, known.get(name), gun)
        chain = (*coll.chains[parent.signed.role], dele)
        kept = {t: v for t, v in child.targets.items() if all(d.allows(t) for d in chain)}
        if len(kept) < len(child.targets):
            coll.warnings.append(
                f"delegation {name}: targets outside the paths delegated to it ignored"
            )
        coll.targets[name] = m.Targets(child.signed, kept, child.delegation_keys, child.delegations)
        coll.signers[name] = tuple(sorted(signers))
        coll.keys[name] = {k: parent.delegation_keys[k] for k in dele.keys.keyids}
        coll.chains[name] = chain
        _walk_delegations(coll, coll.targets[name], files, snapshot, known, now)
