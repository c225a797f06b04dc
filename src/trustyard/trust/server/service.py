"""Trust use cases: serve metadata, manage server keys, validate and apply publishes, delete.

No HTTP types. The store is a `TrustStore`; keys are encrypted at rest with the passphrase.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trustyard.crypto.notary_keys import (
    PrivateKey,
    PublicKey,
    ServerKeyAlgorithm,
    Signer,
    sign_envelope,
)
from trustyard.metadata.events_base import OutboxEntry
from trustyard.trust import model as m
from trustyard.trust.server.hsm_keys import ServerKeyStore, is_token_reference
from trustyard.trust.server.validation import (
    Checked,
    OldVersion,
    ValidationFailure,
    snapshot_body,
    timestamp_body,
    validate_update,
)
from trustyard.trust.store import AuditEvent, Change, ServerKey, StaleVersion, TrustStore, TufFile

SERVER_ROLES = (m.TIMESTAMP, m.SNAPSHOT)


class NotFound(Exception):
    """No such metadata (Notary's METADATA_NOT_FOUND)."""


class InvalidRequest(Exception):
    """A request the server refuses before validation; `code` is Notary's error code."""

    def __init__(self, code: str, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.detail = code, message, detail


@dataclass(frozen=True)
class TrustOptions:
    key_algorithm: ServerKeyAlgorithm = "ed25519"
    timestamp_expiry: dt.timedelta = dt.timedelta(days=14)
    snapshot_expiry: dt.timedelta = dt.timedelta(days=3 * 365)
    # A timestamp with less than this left is re-signed when it is fetched.
    timestamp_refresh: dt.timedelta = dt.timedelta(days=1)


class TrustService:
    def __init__(
        self,
        store: TrustStore,
        passphrase: bytes,
        options: TrustOptions | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        key_store: ServerKeyStore | None = None,
    ) -> None:
        self.store = store
        self._passphrase = passphrase
        # New server keys are generated in this PKCS#11 token when set; keys stored earlier
        # (encrypted with the passphrase) keep working either way.
        self.key_store = key_store
        self.options = options or TrustOptions()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._key_cache: dict[tuple[str, str], Signer] = {}
        # One get-or-create at a time per (gun, role) (a fixed pool, by hash: bounded memory):
        # concurrent first reads in this process then share one key.
        self._key_locks = [asyncio.Lock() for _ in range(64)]

    # -- reading -------------------------------------------------------------------------------
    async def get_metadata(
        self, gun: str, role: str, *, sha256: str | None = None, version: int | None = None
    ) -> TufFile:
        if sha256 is not None or version is not None:
            found = await self.store.get_file(gun, role, sha256=sha256, version=version)
        elif role == m.TIMESTAMP:
            found = await self._fresh_timestamp(gun)
        elif role == m.SNAPSHOT:
            ts = await self._fresh_timestamp(gun)
            found = None
            if ts is not None:
                meta = m.parse_meta_map(m.TIMESTAMP, ts.data).meta.get(m.SNAPSHOT)
                if meta is not None and "sha256" in meta.hashes:
                    found = await self.store.get_file(
                        gun, m.SNAPSHOT, sha256=meta.hashes["sha256"].hex()
                    )
        else:
            found = await self.store.get_file(gun, role)
        if found is None:
            raise NotFound(f"no {role} metadata for {gun}")
        return found

    async def _fresh_timestamp(self, gun: str) -> TufFile | None:
        """The current timestamp, re-signed first when it is about to expire."""
        for _ in range(3):
            ts = await self.store.get_file(gun, m.TIMESTAMP)
            if ts is None:
                return None
            expires = m.parse_signed(m.TIMESTAMP, ts.data).expires
            if expires - self._clock() > self.options.timestamp_refresh:
                return ts
            root_file = await self.store.get_file(gun, m.ROOT)
            snap_meta = m.parse_meta_map(m.TIMESTAMP, ts.data).meta.get(m.SNAPSHOT)
            snap = (
                await self.store.get_file(gun, m.SNAPSHOT, sha256=snap_meta.hashes["sha256"].hex())
                if snap_meta is not None and "sha256" in snap_meta.hashes
                else None
            )
            if root_file is None or snap is None:
                return ts
            root = m.parse_root(root_file.data)
            keys = await self._signing_keys(gun, root, m.TIMESTAMP)
            if keys is None:
                return ts  # we cannot re-sign: serve what we have, the client decides
            new = self._timestamp(gun, snap.data, ts.data, keys)
            try:
                await self.store.publish(
                    gun,
                    [new],
                    Change(0, 0.0, gun, new.version, new.sha256, "update"),
                    AuditEvent("refresh_timestamp", gun, "trustyard", {"version": new.version}),
                )
            except StaleVersion:
                continue  # another worker refreshed it: read again
            return new
        return await self.store.get_file(gun, m.TIMESTAMP)

    # -- server keys ---------------------------------------------------------------------------
    async def _load_key(self, key: ServerKey) -> Signer:
        cached = self._key_cache.get((key.gun, key.key_id))
        if cached is None:
            if is_token_reference(key.private):
                if self.key_store is None:
                    raise ValidationFailure(
                        "ErrBadRoot",
                        f"the {key.role} key of {key.gun} is in a PKCS#11 token and "
                        "trust.key_store is not configured",
                    )
                expected = PublicKey(key.algorithm, key.public)
                cached = await asyncio.to_thread(self.key_store.load, key.private, expected)
            else:
                cached = PrivateKey.decrypt(key.private, self._passphrase)
            self._key_cache[(key.gun, key.key_id)] = cached
        return cached

    async def _signing_keys(self, gun: str, root: m.Root, role: str) -> list[Signer] | None:
        """Held private keys for `role` in `root`, enough for its threshold, else None."""
        wanted = set(root.roles[role].keyids)
        held = [k for k in await self.store.server_keys(gun, role) if k.key_id in wanted]
        if len(held) < root.roles[role].threshold:
            return None
        return [await self._load_key(k) for k in held]

    async def _generate(self, gun: str, role: str) -> tuple[Signer, ServerKey]:
        """A new key for `gun`'s `role` (in the PKCS#11 token when configured), not stored."""
        private: Signer
        if self.key_store is not None:
            token_key = await asyncio.to_thread(self.key_store.generate)
            private, blob = token_key, token_key.reference
        else:
            soft = PrivateKey.generate(self.options.key_algorithm)
            private, blob = soft, soft.encrypt(self._passphrase)
        public = private.public
        record = ServerKey(
            gun=gun,
            role=role,
            key_id=public.key_id,
            algorithm=public.keytype,
            public=public.public,
            private=blob,
            created_at=time.time(),
        )
        return private, record

    async def _create_key(self, gun: str, role: str, actor: str) -> PublicKey:
        """A rotation: always a new key, stored with its audit event."""
        private, record = await self._generate(gun, role)
        audit = AuditEvent("rotate_key", gun, actor, {"role": role, "key_id": record.key_id})
        await self.store.add_server_key(record, audit)
        self._key_cache[(gun, record.key_id)] = private
        return private.public

    async def _create_first_key(self, gun: str, role: str) -> PublicKey:
        """The role's first key: stored only if no other worker or replica stored one first;
        every concurrent first reader gets the one that was stored."""
        private, record = await self._generate(gun, role)
        stored = await self.store.add_first_server_key(record)
        if stored.key_id == record.key_id:
            self._key_cache[(gun, record.key_id)] = private
        return PublicKey(stored.algorithm, stored.public)

    async def get_key(self, gun: str, role: str, actor: str) -> PublicKey:
        """Notary's GetOrCreate{Timestamp,Snapshot}Key: the key the current root names for
        `role`, else the newest pending key, else a new one. Reads create at most that one
        key: concurrent reads in this process wait for each other (so they do not generate
        keys only to throw them away), and the store's insert-if-absent makes the workers of
        one server and the replicas on one database agree on the same first key."""
        lock = self._key_locks[hash((gun, role)) % len(self._key_locks)]
        async with lock:
            return await self._get_or_create_key(gun, role, actor)

    async def _get_or_create_key(self, gun: str, role: str, actor: str) -> PublicKey:
        root_file = await self.store.get_file(gun, m.ROOT)
        if root_file is not None:
            root = m.parse_root(root_file.data)
            keys = root.role_keys(role)
            held = {k.key_id for k in await self.store.server_keys(gun, role)}
            for key_id in root.roles[role].keyids:
                if key_id in held:
                    return keys[key_id]
            if role == m.TIMESTAMP and keys:
                return next(iter(keys.values()))
        existing = await self.store.server_keys(gun, role)
        if existing:
            return PublicKey(existing[0].algorithm, existing[0].public)
        return await self._create_first_key(gun, role)

    async def rotate_key(self, gun: str, role: str, actor: str) -> PublicKey:
        """A new key for `role`; it signs once the client publishes a root that names it."""
        return await self._create_key(gun, role, actor)

    # -- publishing ----------------------------------------------------------------------------
    def _signed_file(
        self, gun: str, role: str, body: dict[str, Any], keys: list[Signer]
    ) -> TufFile:
        data = sign_envelope(body, keys)
        return TufFile(gun, role, int(body["version"]), hashlib.sha256(data).hexdigest(), data)

    def _timestamp(
        self, gun: str, snapshot: bytes, previous: bytes | None, keys: list[Signer]
    ) -> TufFile:
        expires = self._clock() + self.options.timestamp_expiry
        return self._signed_file(
            gun, m.TIMESTAMP, timestamp_body(snapshot, previous, expires), keys
        )

    async def _current(self, gun: str, updates: dict[str, bytes]) -> dict[str, bytes]:
        needed = {m.ROOT, m.TARGETS, m.SNAPSHOT, m.TIMESTAMP}
        for role in updates:
            while m.is_delegation(role):
                needed.add(role)
                role = m.parent_role(role)
        current = {}
        for role in needed:
            found = await self.store.get_file(gun, role)
            if found is not None:
                current[role] = found.data
        return current

    async def publish(
        self,
        gun: str,
        updates: dict[str, bytes],
        actor: str,
        events: Sequence[OutboxEntry] = (),
    ) -> list[TufFile]:
        """Validate `updates` (role → bytes), add a server snapshot when none was sent and a new
        timestamp, and store everything, with the outbox rows `events`, in one transaction.
        Returns the stored files."""
        for _attempt in range(3):
            current = await self._current(gun, updates)
            try:
                checked = validate_update(updates, current, self._clock())
            except OldVersion as exc:
                raise InvalidRequest("VERSION", str(exc)) from None
            files = await self._complete(gun, checked, current)
            change_ts = files[-1]
            audit = AuditEvent(
                "publish",
                gun,
                actor,
                {
                    "roles": sorted(updates),
                    "versions": {
                        f.role: {
                            "old": m.parse_signed(f.role, current[f.role]).version
                            if f.role in current
                            else None,
                            "new": f.version,
                        }
                        for f in files
                    },
                },
            )
            try:
                await self.store.publish(
                    gun,
                    files,
                    Change(0, 0.0, gun, change_ts.version, change_ts.sha256, "update"),
                    audit,
                    events,
                )
            except StaleVersion as exc:
                if exc.role in updates:
                    raise InvalidRequest("VERSION", str(exc)) from None
                continue  # a concurrent publish moved the server-built roles on: redo
            return files
        raise InvalidRequest("UPDATING", "concurrent updates to this collection; try again")

    async def _complete(
        self, gun: str, checked: Checked, current: dict[str, bytes]
    ) -> list[TufFile]:
        now = self._clock()
        files = [
            TufFile(
                gun,
                role,
                m.parse_signed(role, data).version,
                hashlib.sha256(data).hexdigest(),
                data,
            )
            for role, data in checked.files.items()
        ]
        if checked.snapshot_uploaded:
            snapshot = checked.files[m.SNAPSHOT]
        else:
            keys = await self._signing_keys(gun, checked.root, m.SNAPSHOT)
            if keys is None:
                raise ValidationFailure(
                    "ErrBadHierarchy",
                    "no snapshot was included in update and server does not hold current "
                    "snapshot key for repository",
                    missing=m.SNAPSHOT,
                )
            body = snapshot_body(
                checked, current.get(m.SNAPSHOT), now + self.options.snapshot_expiry
            )
            snap_file = self._signed_file(gun, m.SNAPSHOT, body, keys)
            files.append(snap_file)
            snapshot = snap_file.data
        ts_keys = await self._signing_keys(gun, checked.root, m.TIMESTAMP)
        if ts_keys is None:
            raise ValidationFailure("ErrBadRoot", "no timestamp keys exist on the server")
        files.append(self._timestamp(gun, snapshot, current.get(m.TIMESTAMP), ts_keys))
        return files

    async def delete(self, gun: str, actor: str) -> None:
        await self.store.delete_gun(gun, AuditEvent("delete", gun, actor))

    async def changes(
        self, gun: str | None, change_id: int | None, records: int, reverse: bool
    ) -> list[Change]:
        return await self.store.changes(gun, change_id, records, reverse)
