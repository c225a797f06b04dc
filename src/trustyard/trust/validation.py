"""Publish validation as notary-server does it, and the server-built snapshot/timestamp bodies.

Pure: takes the current metadata (already loaded by the service) and the uploaded files, returns
what to store or raises `ValidationFailure` with one of Notary's serialisable validation errors
(`ErrBadRoot`, `ErrBadTargets`, `ErrBadSnapshot`, `ErrBadHierarchy`, `ErrValidation`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from trustyard.trust import model as m
from trustyard.trust.keys import PublicKey


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


def validate_update(
    updates: dict[str, bytes], current: dict[str, bytes], now: dt.datetime
) -> Checked:
    """Check `updates` (role → uploaded bytes) against `current` (role → stored bytes).

    `current` must hold the stored root, targets and snapshot (when they exist) and every stored
    ancestor of an uploaded delegation.
    """
    for role in updates:
        if not m.valid_role(role) or role == m.TIMESTAMP:
            raise ValidationFailure("ErrValidation", f"{role!r} cannot be uploaded")
    effective = {r: d for r, d in current.items() if r != m.TIMESTAMP}
    files: dict[str, bytes] = {}

    # Root: self-signed to threshold, and on rotation also by the previous root's threshold.
    stored_root = None
    if m.ROOT in current:
        try:
            stored_root = m.parse_root(current[m.ROOT])
        except m.MetadataError as exc:  # pragma: no cover - we only store validated roots
            raise bad_root(f"stored root is unreadable: {exc}") from None
    if m.ROOT in updates:
        try:
            root = m.parse_root(updates[m.ROOT])
        except m.MetadataError as exc:
            raise bad_root(str(exc)) from None
        if stored_root is not None:
            cur = stored_root.signed.version
            if root.signed.version not in (cur, cur + 1):
                raise bad_root(
                    f"Root modifications must increment the version. "
                    f"Current {cur}, new {root.signed.version}"
                )
        _check_version(m.ROOT, root.signed.version, current)
        _not_expired(root.signed, now, bad_root)
        if not root.signed.meets(root.roles[m.ROOT], root.keys):
            raise bad_root("root is not signed by the threshold of its own root keys")
        if stored_root is not None and not root.signed.meets(
            stored_root.roles[m.ROOT], stored_root.keys
        ):
            raise bad_root("rotated root is not signed by the threshold of the previous root keys")
        files[m.ROOT] = effective[m.ROOT] = updates[m.ROOT]
    elif stored_root is not None:
        root = stored_root
    else:
        raise ValidationFailure("ErrValidation", "no pre-existing root and no root provided")

    # Targets and delegations, shallowest first so parents are checked before children.
    parsed: dict[str, m.Targets] = {}

    def load_targets(role: str) -> m.Targets | None:
        if role in parsed:
            return parsed[role]
        if role in effective:
            try:
                parsed[role] = m.parse_targets(role, effective[role])
            except m.MetadataError:
                return None
            return parsed[role]
        return None

    for role in sorted((r for r in updates if r.startswith(m.TARGETS)), key=_depth):
        try:
            t = m.parse_targets(role, updates[role])
        except m.MetadataError as exc:
            raise bad_targets(str(exc)) from None
        _check_version(role, t.signed.version, current)
        _not_expired(t.signed, now, bad_targets)
        if role == m.TARGETS:
            if not t.signed.meets(root.roles[m.TARGETS], root.keys):
                raise bad_targets(
                    "targets is not signed by the threshold of the root's targets keys"
                )
            allowed: tuple[str, ...] = ("",)
        else:
            parent = load_targets(m.parent_role(role))
            delegation = parent.delegations.get(role) if parent is not None else None
            if parent is None or delegation is None:
                raise bad_targets(f"{role} is not delegated by {m.parent_role(role)}")
            if not t.signed.meets(delegation.keys, parent.delegation_keys):
                raise bad_targets(
                    f"{role} is not signed by the threshold of the keys {m.parent_role(role)} "
                    "delegated to it"
                )
            outside = [name for name in t.targets if not delegation.allows(name)]
            if outside:
                raise bad_targets(
                    f"{role} signs targets outside its delegated paths: {', '.join(outside[:5])}"
                )
            allowed = delegation.paths
        for child in t.delegations.values():
            if not all(any(p.startswith(a) for a in allowed) for p in child.paths):
                raise bad_targets(f"{child.name} is delegated paths outside those of {role}")
        parsed[role] = t
        files[role] = effective[role] = updates[role]

    if m.TARGETS not in effective:
        raise ValidationFailure(
            "ErrBadHierarchy", "no targets metadata uploaded or stored", missing=m.TARGETS
        )

    # Snapshot, when the client sends one: signed by the root's snapshot keys, and describing
    # exactly the root, targets and delegations this update leaves in place.
    snapshot_uploaded = m.SNAPSHOT in updates
    if snapshot_uploaded:
        try:
            snap = m.parse_meta_map(m.SNAPSHOT, updates[m.SNAPSHOT])
        except m.MetadataError as exc:
            raise bad_snapshot(str(exc)) from None
        _check_version(m.SNAPSHOT, snap.signed.version, current)
        _not_expired(snap.signed, now, bad_snapshot)
        if not snap.signed.meets(root.roles[m.SNAPSHOT], root.keys):
            raise bad_snapshot(
                "snapshot is not signed by the threshold of the root's snapshot keys"
            )
        must_match = [m.ROOT, m.TARGETS, *(r for r in files if m.is_delegation(r))]
        for role in must_match:
            if role not in snap.meta:
                raise bad_snapshot(f"snapshot does not describe {role}")
            why = snap.meta[role].mismatch(effective[role])
            if why:
                raise bad_snapshot(f"snapshot entry for {role}: {why}")
        files[m.SNAPSHOT] = updates[m.SNAPSHOT]
    return Checked(root, files, snapshot_uploaded, effective)


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
