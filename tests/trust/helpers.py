"""A tiny Notary-dialect repository simulator: hand-made, signed metadata for tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustyard.crypto.notary_keys import PrivateKey, b64, canonical_json
from trustyard.metadata.trust_sql import SqlTrustStore
from trustyard.trust.model import format_time
from trustyard.trust.server.service import TrustService
from trustyard.wiring import open_database

NOW = dt.datetime.now(dt.UTC)
LATER = NOW + dt.timedelta(days=365)
GUN = "example.com/team/app"


def signed_file(body: dict[str, Any], keys: list[PrivateKey]) -> bytes:
    """Notary-style envelope; not canonical on purpose (the server must keep exact bytes)."""
    message = canonical_json(body)
    sigs = [
        {"keyid": k.public.key_id, "method": k.method, "sig": b64(k.sign(message))} for k in keys
    ]
    return json.dumps({"signed": body, "signatures": sigs}, indent=1).encode()


def file_meta(data: bytes) -> dict[str, Any]:
    return {
        "length": len(data),
        "hashes": {
            "sha256": b64(hashlib.sha256(data).digest()),
            "sha512": b64(hashlib.sha512(data).digest()),
        },
    }


@dataclass
class Repo:
    """Client-side keys and metadata builders for one GUN."""

    root_keys: list[PrivateKey] = field(default_factory=lambda: [PrivateKey.generate("ecdsa")])
    targets_key: PrivateKey = field(default_factory=lambda: PrivateKey.generate("ed25519"))
    snapshot_key: PrivateKey = field(default_factory=lambda: PrivateKey.generate("ecdsa"))
    root_threshold: int = 1

    def root(
        self,
        timestamp_key: dict[str, Any],
        *,
        version: int = 1,
        snapshot_key: dict[str, Any] | None = None,
        expires: dt.datetime = LATER,
        sign_with: list[PrivateKey] | None = None,
    ) -> bytes:
        snap = snapshot_key or self.snapshot_key.public.to_json()
        keys: dict[str, Any] = {}
        roles: dict[str, Any] = {}

        def add(role: str, key_json: list[dict[str, Any]], threshold: int = 1) -> None:
            ids = []
            for kj in key_json:
                kid = hashlib.sha256(canonical_json(kj)).hexdigest()
                keys[kid] = kj
                ids.append(kid)
            roles[role] = {"keyids": ids, "threshold": threshold}

        add("root", [k.public.to_json() for k in self.root_keys], self.root_threshold)
        add("targets", [self.targets_key.public.to_json()])
        add("snapshot", [snap])
        add("timestamp", [timestamp_key])
        body = {
            "_type": "Root",
            "consistent_snapshot": False,
            "expires": format_time(expires),
            "keys": keys,
            "roles": roles,
            "version": version,
        }
        return signed_file(body, sign_with if sign_with is not None else self.root_keys)

    def targets(
        self,
        targets: dict[str, bytes],
        *,
        role: str = "targets",
        version: int = 1,
        delegations: list[tuple[str, PrivateKey, list[str]]] = (),  # type: ignore[assignment]
        key: PrivateKey | None = None,
        expires: dt.datetime = LATER,
    ) -> bytes:
        dkeys: dict[str, Any] = {}
        droles = []
        for name, dkey, paths in delegations:
            dkeys[dkey.public.key_id] = dkey.public.to_json()
            droles.append(
                {"name": name, "keyids": [dkey.public.key_id], "threshold": 1, "paths": paths}
            )
        body = {
            "_type": "Targets",
            "delegations": {"keys": dkeys, "roles": droles or None},
            "expires": format_time(expires),
            "targets": {name: file_meta(content) for name, content in targets.items()} or None,
            "version": version,
        }
        return signed_file(body, [key or self.targets_key])

    def snapshot(
        self, files: dict[str, bytes], *, version: int = 1, expires: dt.datetime = LATER
    ) -> bytes:
        body = {
            "_type": "Snapshot",
            "expires": format_time(expires),
            "meta": {role: file_meta(data) for role, data in files.items()},
            "version": version,
        }
        return signed_file(body, [self.snapshot_key])


async def open_service(tmp_path: Path) -> TrustService:
    store = (await open_database(tmp_path / "metadata.db", create=True)).metadata
    return TrustService(SqlTrustStore(store.reader, store.writer), b"test-passphrase")


async def close_service(service: TrustService) -> None:
    store = service.store
    assert isinstance(store, SqlTrustStore)
    await store.reader.dispose()
    await store.writer.dispose()
