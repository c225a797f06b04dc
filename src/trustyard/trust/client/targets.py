"""Changing a verified collection: which keys sign which role, and re-signing changed roles.

Pure: it takes a verified `Collection` and the client's `KeyStore` and returns signed files; the
client publishes them (`repository.TrustClient.update`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from trustyard.crypto.notary_keys import PublicKey, b64
from trustyard.trust import model as m
from trustyard.trust.client.documents import (
    TARGETS_LIFETIME,
    empty_targets,
    envelope,
    expiry,
    snapshot_file,
)
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.keys import KeyStore, KeyStoreError, NotarySigner
from trustyard.trust.client.pinning import canonical_key_id
from trustyard.trust.client.verify import Collection

Change = Callable[[dict[str, Any]], None]  # a mutation of a role's `signed` body


def signers_for(store: KeyStore, keys: dict[str, PublicKey]) -> list[tuple[str, NotarySigner]]:
    """(key ID, signer) for each of `keys` whose private half this client holds."""
    found: list[tuple[str, NotarySigner]] = []
    for keyid, key in keys.items():
        cid = canonical_key_id(key)
        if store.has(cid):
            try:
                found.append((keyid, store.signer(cid)))
            except KeyStoreError as exc:
                raise TrustError(str(exc)) from None
    return found


def role_keys(coll: Collection, role: str) -> tuple[dict[str, PublicKey], int]:
    """The keys of `role` (targets or a delegation) and its threshold."""
    if role == m.TARGETS:
        return coll.root.role_keys(m.TARGETS), coll.root.roles[m.TARGETS].threshold
    parent = coll.targets.get(m.parent_role(role))
    if parent is None or role not in parent.delegations:
        raise TrustError(f"{role} is not a delegation of {coll.gun}")
    dele = parent.delegations[role]
    return {k: parent.delegation_keys[k] for k in dele.keys.keyids}, dele.keys.threshold


def writable_roles(store: KeyStore, coll: Collection) -> list[str]:
    """Roles this client holds enough keys for: delegations first, then targets."""
    roles = []
    for parent in list(coll.targets.values()):
        for name in parent.delegations:
            keys, threshold = role_keys(coll, name)
            if len(signers_for(store, keys)) >= threshold:
                roles.append(name)
    keys, threshold = role_keys(coll, m.TARGETS)
    if len(signers_for(store, keys)) >= threshold:
        roles.append(m.TARGETS)
    return roles


def signed_changes(
    store: KeyStore, gun: str, changes: dict[str, Change], coll: Collection
) -> dict[str, bytes]:
    """Apply `changes` (role → mutation of its `signed` body) and re-sign each role, plus a new
    snapshot when this client holds the snapshot key."""
    files: dict[str, bytes] = {}
    for role, change in changes.items():
        keys, threshold = role_keys(coll, role)
        signers = signers_for(store, keys)
        if len(signers) < threshold:
            raise TrustError(
                f"cannot sign {role} of {gun}: this client holds {len(signers)} of its keys "
                f"(threshold {threshold}); keys: {', '.join(k[:12] for k in keys)}"
            )
        body = current_body(coll, role, keys, threshold) if role in coll.raw else empty_targets(0)
        change(body)
        body["version"] = int(body["version"]) + 1
        body["expires"] = expiry(TARGETS_LIFETIME)
        files[role] = envelope(body, signers)
    return with_snapshot(store, coll, files)


def current_body(
    coll: Collection, role: str, keys: dict[str, PublicKey], threshold: int
) -> dict[str, Any]:
    """The `signed` body of `role` to change: from a file that verified, or at least one
    signed to its threshold by the role's keys (an expired delegation is renewed by
    re-signing it). Never from a file the server could have forged: re-signing it would
    make its targets ours."""
    if role in coll.targets:
        return dict(coll.targets[role].signed.body)
    try:
        parsed = m.parse_targets(role, coll.raw[role])
    except m.MetadataError as exc:
        raise TrustError(
            f"{role} of {coll.gun} is malformed on the server ({exc}); refusing to sign on "
            "top of it"
        ) from None
    signers = parsed.signed.valid_signers(m.RoleKeys(tuple(keys), threshold), keys)
    if len(signers) < threshold:
        raise TrustError(
            f"{role} of {coll.gun} on the server is not signed by its own keys (forged or "
            "corrupt); refusing to sign on top of it"
        )
    return dict(parsed.signed.body)


def with_snapshot(store: KeyStore, coll: Collection, files: dict[str, bytes]) -> dict[str, bytes]:
    """Add a new snapshot when this client holds the snapshot key (else the server makes it)."""
    snap_signers = signers_for(store, coll.root.role_keys(m.SNAPSHOT))
    if snap_signers and m.SNAPSHOT in coll.raw:
        previous = json.loads(coll.raw[m.SNAPSHOT])["signed"]
        version = int(previous["version"]) + 1
        snapshot = snapshot_file(files, previous["meta"], version, snap_signers)
        files = {**files, m.SNAPSHOT: snapshot}
    return files


def default_roles(store: KeyStore, coll: Collection, name: str) -> list[str]:
    """Where a new target goes: every writable delegation that may sign `name`, else targets."""
    writable = writable_roles(store, coll)
    delegated = [r for r in writable if r != m.TARGETS and _allows(coll, r, name)]
    if delegated:
        return delegated
    if m.TARGETS in writable:
        return [m.TARGETS]
    raise TrustError(
        f"this client holds no key that may sign {name!r} in {coll.gun}: import the targets "
        "key or a delegation key (`trustyard trust key generate`, then ask the owner to "
        "`trustyard trust delegation add`)"
    )


def _allows(coll: Collection, role: str, name: str) -> bool:
    parent = coll.targets.get(m.parent_role(role))
    return (
        parent is not None
        and role in parent.delegations
        and parent.delegations[role].allows(name)
        and coll.allows(m.parent_role(role), name)
    )


def add_target(name: str, sha256_hex: str, length: int) -> Change:
    meta = {"hashes": {"sha256": b64(bytes.fromhex(sha256_hex))}, "length": length}

    def add(body: dict[str, Any]) -> None:
        body["targets"] = dict(body.get("targets") or {})
        body["targets"][name] = meta

    return add


def removable_roles(store: KeyStore, coll: Collection, name: str) -> list[str]:
    """The roles that sign `name` and that this client can sign."""
    holding = [r for r, t in coll.targets.items() if name in t.targets]
    writable = set(writable_roles(store, coll))
    roles = [r for r in holding if r in writable]
    if not roles:
        raise TrustError(f"{name!r} is not signed in a role this client can sign in {coll.gun}")
    return roles


def remove_target(name: str) -> Change:
    def remove(body: dict[str, Any]) -> None:
        body["targets"] = {k: v for k, v in (body.get("targets") or {}).items() if k != name}

    return remove
