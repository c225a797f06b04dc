"""Publish validation as notary-server does it, and the server-built snapshot/timestamp bodies.

Pure: takes the current metadata (already loaded by the service) and the uploaded files, returns
what to store or raises `ValidationFailure` with one of Notary's serialisable validation errors
(`ErrBadRoot`, `ErrBadTargets`, `ErrBadSnapshot`, `ErrBadHierarchy`, `ErrValidation`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from trustyard.crypto.notary_keys import PublicKey
from trustyard.trust import model as m


class ValidationFailure(Exception):
    """An invalid update. `to_detail()` is Notary's SerializableError JSON."""

    def __init__(self, kind: str, msg: str, missing: str | None = None) -> None:
        super().__init__(msg)
        self.kind, self.msg, self.missing = kind, msg, missing

    def to_detail(self) -> dict[str, Any]:
        error: dict[str, Any] = {"Msg": self.msg}
        if self.kind == "ErrBadHierarchy":
            error = {"Missing": self.missing or "", "Msg": self.msg}
        return {"Name": self.kind, "Error": error}


class OldVersion(Exception):
    """An uploaded role is not newer than the stored one (Notary's VERSION error)."""


def bad_root(msg: str) -> ValidationFailure:
    return ValidationFailure("ErrBadRoot", msg)


def bad_targets(msg: str) -> ValidationFailure:
    return ValidationFailure("ErrBadTargets", msg)


def bad_snapshot(msg: str) -> ValidationFailure:
    return ValidationFailure("ErrBadSnapshot", msg)


@dataclass(frozen=True)
class Checked:
    """A validated update: the effective root, and the files (role → bytes) to store."""

    root: m.Root
    files: dict[str, bytes]
    snapshot_uploaded: bool
    # Bytes of every role that the snapshot describes after this update (for generation).
    effective: dict[str, bytes]


def _depth(role: str) -> int:
    return role.count("/")


def _not_expired(signed: m.Signed, now: dt.datetime, fail: Any) -> None:
    if signed.expires <= now:
        raise fail(f"{signed.role} expired at {m.format_time(signed.expires)}")


def _check_version(role: str, new: int, current: dict[str, bytes]) -> None:
    if role in current:
        old = m.parse_signed(role, current[role]).version
        if new <= old:
            raise OldVersion(f"{role} version {new} is not newer than the stored version {old}")


def _within(name: str, paths: tuple[str, ...]) -> bool:
    """Notary's prefix match: `name` starts with one of `paths` ("" allows everything)."""
    return any(name.startswith(p) for p in paths)


def restrict_paths(parent: tuple[str, ...], child: tuple[str, ...]) -> tuple[str, ...]:
    """notary's `RestrictDelegationPathPrefixes`: the child's paths that lie within one of the
    parent's; a child path wider than every parent path is dropped, not narrowed."""
    return tuple(p for p in child if _within(p, parent))


def _stored_targets(role: str, current: dict[str, bytes]) -> dict[str, m.FileMeta]:
    """The targets the stored version of `role` signs.

    A target a parent's narrowing has put outside the role's paths may stay, unchanged, in the
    role's next version: clients check targets along the chain themselves (notary's restricts
    the paths as here; ours keeps what every delegation on the chain allows), and notary's
    client cannot remove a target outside the paths, so refusing it would leave the delegate
    unable to publish anything. A new target, or a new hash for an old name, is refused.
    """
    if role not in current:
        return {}
    try:
        return m.parse_targets(role, current[role]).targets
    except m.MetadataError:  # pragma: no cover - we only store validated metadata
        return {}


def _show(paths: tuple[str, ...]) -> str:
    shown = [repr(p[:80]) for p in paths[:5]]
    return "[" + ", ".join(shown) + (", ..." if len(paths) > 5 else "") + "]"


class _Chain:
    """The delegation tree of one GUN as this update leaves it, walked from `targets` down.

    A delegated role's keys come from its parent, and its paths are those its parent gives it
    restricted by the paths of every role above (notary's `GetDelegationRole` walk), so a stored
    delegation cannot widen what its ancestors allow. Roles of this update are accepted as they
    pass validation; stored ancestors are verified when first needed: each must still be
    delegated by its parent and signed by the threshold of the keys it delegates (expiry aside,
    as notary-server loads them), else the chain below it is broken.
    """

    def __init__(self, root: m.Root, effective: dict[str, bytes]) -> None:
        self._root = root
        self._effective = effective
        self._trusted: dict[str, m.Targets] = {}
        self._paths: dict[str, tuple[str, ...]] = {m.TARGETS: ("",)}

    def accept(self, role: str, targets: m.Targets) -> None:
        self._trusted[role] = targets

    def delegation(self, role: str) -> tuple[m.Delegation, m.Targets]:
        """`role`'s entry in its parent, and the parent; refused when the chain is broken."""
        parent_name = m.parent_role(role)
        parent = self._targets(parent_name, role)
        delegation = parent.delegations.get(role)
        if delegation is None:
            raise bad_targets(f"{role} is not delegated by {parent_name}")
        return delegation, parent

    def paths(self, role: str) -> tuple[str, ...]:
        if role not in self._paths:
            delegation, _ = self.delegation(role)
            self._paths[role] = restrict_paths(self.paths(m.parent_role(role)), delegation.paths)
        return self._paths[role]

    def _targets(self, name: str, below: str) -> m.Targets:
        if name in self._trusted:
            return self._trusted[name]
        data = self._effective.get(name)
        if data is None:
            raise bad_targets(f"{below} is not delegated: {name} does not exist")
        try:
            stored = m.parse_targets(name, data)
        except m.MetadataError as exc:
            raise bad_targets(f"{below} is not delegated: stored {name}: {exc}") from None
        if name == m.TARGETS:
            keys, key_map = self._root.roles[m.TARGETS], self._root.keys
        else:
            delegation, parent = self.delegation(name)
            keys, key_map = delegation.keys, parent.delegation_keys
        if not stored.signed.meets(keys, key_map):
            raise bad_targets(
                f"{below} is not delegated: the stored {name} is no longer signed by the "
                f"threshold of the keys {m.parent_role(name) if name != m.TARGETS else 'root'} "
                f"delegates to it"
            )
        self._trusted[name] = stored
        return stored


def validate_update(
    updates: dict[str, bytes], current: dict[str, bytes], now: dt.datetime
) -> Checked:
    """Check `updates` (role → uploaded bytes) against `current` (role → stored bytes).

    `current` must hold the stored root, targets and snapshot (when they exist) and every stored
    ancestor of an uploaded delegation. The steps run in python-tuf's `TrustedMetadataSet` order
    (root, then targets and delegations, then snapshot), each failing with its own error kind.
    """
    for role in updates:
        if not m.valid_role(role) or role == m.TIMESTAMP:
            raise ValidationFailure("ErrValidation", f"{role!r} cannot be uploaded")
    update = _Update(updates, current, now)
    root = update.update_root()
    chain = _Chain(root, update.effective)
    for role in sorted((r for r in updates if r.startswith(m.TARGETS)), key=_depth):
        update.update_targets(role, root, chain)
    if m.TARGETS not in update.effective:
        raise ValidationFailure(
            "ErrBadHierarchy", "no targets metadata uploaded or stored", missing=m.TARGETS
        )
    snapshot_uploaded = m.SNAPSHOT in updates
    if snapshot_uploaded:
        update.update_snapshot(root)
    return Checked(root, update.files, snapshot_uploaded, update.effective)


class _Update:
    """One publish being validated: what is stored, what was uploaded, and what to store.

    `effective` starts as the stored roles (timestamp aside) and takes each uploaded role as it
    passes its step, so later steps see the metadata this update leaves in place.
    """

    def __init__(
        self, updates: dict[str, bytes], current: dict[str, bytes], now: dt.datetime
    ) -> None:
        self.updates, self.current, self.now = updates, current, now
        self.effective = {r: d for r, d in current.items() if r != m.TIMESTAMP}
        self.files: dict[str, bytes] = {}

    def _accept(self, role: str) -> None:
        self.files[role] = self.effective[role] = self.updates[role]

    def update_root(self) -> m.Root:
        """Root: self-signed to threshold, and on rotation also by the previous root's threshold."""
        stored_root = None
        if m.ROOT in self.current:
            try:
                stored_root = m.parse_root(self.current[m.ROOT])
            except m.MetadataError as exc:  # pragma: no cover - we only store validated roots
                raise bad_root(f"stored root is unreadable: {exc}") from None
        if m.ROOT not in self.updates:
            if stored_root is None:
                raise ValidationFailure(
                    "ErrValidation", "no pre-existing root and no root provided"
                )
            return stored_root
        try:
            root = m.parse_root(self.updates[m.ROOT])
        except m.MetadataError as exc:
            raise bad_root(str(exc)) from None
        if stored_root is not None:
            cur = stored_root.signed.version
            if root.signed.version not in (cur, cur + 1):
                raise bad_root(
                    f"Root modifications must increment the version. "
                    f"Current {cur}, new {root.signed.version}"
                )
        _check_version(m.ROOT, root.signed.version, self.current)
        _not_expired(root.signed, self.now, bad_root)
        if not root.signed.meets(root.roles[m.ROOT], root.keys):
            raise bad_root("root is not signed by the threshold of its own root keys")
        if stored_root is not None and not root.signed.meets(
            stored_root.roles[m.ROOT], stored_root.keys
        ):
            raise bad_root("rotated root is not signed by the threshold of the previous root keys")
        self._accept(m.ROOT)
        return root

    def update_targets(self, role: str, root: m.Root, chain: _Chain) -> None:
        """`targets` or a delegation; called shallowest first so parents are checked first."""
        try:
            t = m.parse_targets(role, self.updates[role])
        except m.MetadataError as exc:
            raise bad_targets(str(exc)) from None
        _check_version(role, t.signed.version, self.current)
        _not_expired(t.signed, self.now, bad_targets)
        if role == m.TARGETS:
            if not t.signed.meets(root.roles[m.TARGETS], root.keys):
                raise bad_targets(
                    "targets is not signed by the threshold of the root's targets keys"
                )
        else:
            self._check_delegated(role, t, chain)
        allowed = chain.paths(role)
        for child in t.delegations.values():
            wider = [p for p in child.paths if not _within(p, allowed)]
            if wider:
                raise bad_targets(
                    f"{child.name} is delegated paths outside those of {role} "
                    f"{_show(allowed)}: {_show(tuple(wider))}"
                )
        chain.accept(role, t)
        self._accept(role)

    def _check_delegated(self, role: str, t: m.Targets, chain: _Chain) -> None:
        """A delegation: signed by the keys its parent gives it, targets within its paths."""
        delegation, parent = chain.delegation(role)
        if not t.signed.meets(delegation.keys, parent.delegation_keys):
            raise bad_targets(
                f"{role} is not signed by the threshold of the keys {m.parent_role(role)} "
                "delegated to it"
            )
        allowed = chain.paths(role)
        kept = _stored_targets(role, self.current)
        outside = [
            name
            for name, meta in t.targets.items()
            if not _within(name, allowed) and kept.get(name) != meta
        ]
        if outside:
            raise bad_targets(
                f"{role} signs targets outside its delegated paths {_show(allowed)} "
                f"(as restricted by every role above it): {', '.join(n[:80] for n in outside[:5])}"
            )

    def update_snapshot(self, root: m.Root) -> None:
        """An uploaded snapshot: signed by the root's snapshot keys, and describing exactly the
        root, targets and delegations this update leaves in place."""
        try:
            snap = m.parse_meta_map(m.SNAPSHOT, self.updates[m.SNAPSHOT])
        except m.MetadataError as exc:
            raise bad_snapshot(str(exc)) from None
        _check_version(m.SNAPSHOT, snap.signed.version, self.current)
        _not_expired(snap.signed, self.now, bad_snapshot)
        if not snap.signed.meets(root.roles[m.SNAPSHOT], root.keys):
            raise bad_snapshot(
                "snapshot is not signed by the threshold of the root's snapshot keys"
            )
        must_match = [m.ROOT, m.TARGETS, *(r for r in self.files if m.is_delegation(r))]
        for role in must_match:
            if role not in snap.meta:
                raise bad_snapshot(f"snapshot does not describe {role}")
            why = snap.meta[role].mismatch(self.effective[role])
            if why:
                raise bad_snapshot(f"snapshot entry for {role}: {why}")
        self.files[m.SNAPSHOT] = self.updates[m.SNAPSHOT]


def server_key_ids(root: m.Root, role: str) -> tuple[str, ...]:
    return root.roles[role].keyids


def snapshot_body(checked: Checked, previous: bytes | None, expires: dt.datetime) -> dict[str, Any]:
    """The `signed` part of a server-built snapshot: the previous one's entries, updated."""
    meta: dict[str, Any] = {}
    version = 1
    if previous is not None:
        prev = m.parse_meta_map(m.SNAPSHOT, previous)
        meta = {role: fm.to_json() for role, fm in prev.meta.items()}
        version = prev.signed.version + 1
    for role in (m.ROOT, m.TARGETS, *(r for r in checked.files if m.is_delegation(r))):
        meta[role] = m.FileMeta.of(checked.effective[role]).to_json()
    return {
        "_type": "Snapshot",
        "expires": m.format_time(expires),
        "meta": meta,
        "version": version,
    }


def timestamp_body(snapshot: bytes, previous: bytes | None, expires: dt.datetime) -> dict[str, Any]:
    version = 1
    if previous is not None:
        version = m.parse_signed(m.TIMESTAMP, previous).version + 1
    return {
        "_type": "Timestamp",
        "expires": m.format_time(expires),
        "meta": {m.SNAPSHOT: m.FileMeta.of(snapshot).to_json()},
        "version": version,
    }


def role_public_keys(root: m.Root, role: str) -> dict[str, PublicKey]:
    return root.role_keys(role)
