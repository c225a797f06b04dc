"""A client for any Notary v1 compatible trust server (ours, or notary-server).

State lives in a trust directory, like Notary's: `private/` (encrypted keys, keys.py),
`tuf/<gun>/metadata/<role>.json` (the last verified copy of every role, trusted.py) and
`pins.json` (config.py). `TrustClient` is the facade the CLI uses; the parts are the HTTP
transport (transport.py), fetch-and-verify (fetch.py), the root keys (roots.py), targets
(targets.py) and delegations (delegations.py).

Every change is one atomic publish (a multipart POST of the changed roles); nothing is sent
before all files are built and signed, so a failure leaves the server as it was.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from trustyard.crypto.notary_keys import PublicKey
from trustyard.trust import model as m
from trustyard.trust.client import delegations, roots, targets
from trustyard.trust.client.config import ClientConfig
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.fetch import fetch_verified
from trustyard.trust.client.keys import FileSigner, KeyStore, KeyStoreError, NotarySigner
from trustyard.trust.client.pinning import canonical_key_id, cert_key
from trustyard.trust.client.transport import TrustServer
from trustyard.trust.client.trusted import TrustedFiles
from trustyard.trust.client.verify import Collection, TargetHit


def gun_of(host: str, repository: str) -> str:
    """Docker Content Trust's GUN for an image: the registry host and the repository."""
    return f"{host}/{repository}"


class TrustClient:
    def __init__(
        self,
        config: ClientConfig,
        keys: KeyStore,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        auth_file: Path | None = None,
    ) -> None:
        if not config.server:
            raise TrustError("no trust server: pass --server URL or set remote_server.url")
        self.config = config
        self.keys = keys
        self.server = TrustServer(
            config.server,
            root_ca=config.root_ca,
            transport=transport,
            timeout=timeout,
            auth_file=auth_file,
        )
        self.trusted = TrustedFiles(config.trust_dir)

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> TrustClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------
    def get_file(self, gun: str, role: str) -> bytes | None:
        return self.server.get_file(gun, role)

    def fetch(self, gun: str, *, remember: bool = True) -> Collection:
        """The verified collection (fetch.fetch_verified); with `remember`, its files become the
        new trusted copies."""
        return fetch_verified(
            self.server, self.trusted, self.config.pinning, gun, remember=remember
        )

    def lookup(self, gun: str, name: str) -> tuple[Collection, list[TargetHit]]:
        coll = self.fetch(gun)
        return coll, coll.lookup(name)

    # -- changing --------------------------------------------------------------------------------
    def update(self, gun: str, changes: dict[str, targets.Change], coll: Collection) -> None:
        """Apply `changes` (role → mutation of its `signed` body), re-sign, publish at once."""
        self.server.publish(gun, targets.signed_changes(self.keys, gun, changes, coll))

    def init(
        self,
        gun: str,
        *,
        root_key: str | None = None,
        root_cert: Path | None = None,
        server_managed_snapshot: bool = False,
        targets_key: str | None = None,
    ) -> dict[str, str]:
        """Make the collection: root (signed by the root key), targets and, unless the server
        manages it, snapshot; the server's timestamp key. Returns the key IDs."""
        if self.get_file(gun, m.ROOT) is not None:
            raise TrustError(f"{gun} already has trust data on {self.config.server}")
        self.trusted.forget(gun)
        new = self._new_collection(gun, root_key, root_cert, server_managed_snapshot, targets_key)
        files = new.files()
        self.server.publish(gun, files)
        self.trusted.write(gun, m.ROOT, files[m.ROOT])
        return new.ids()

    def _new_collection(
        self,
        gun: str,
        root_key: str | None,
        root_cert: Path | None,
        server_managed_snapshot: bool,
        targets_key: str | None,
    ) -> roots.NewCollection:
        try:
            signer = roots.root_signer(self.keys, gun, root_key)
            root_pub = cert_key(roots.root_certs(self.config.pinning, gun, signer, root_cert))
            targets_signer = roots.targets_signer(self.keys, gun, targets_key)
            snapshot: FileSigner | None = None
            if server_managed_snapshot:
                snapshot_pub = self.server.server_key(gun, m.SNAPSHOT)
            else:
                snapshot = FileSigner(self.keys.generate("snapshot", gun))
                snapshot_pub = snapshot.public
        except KeyStoreError as exc:
            raise TrustError(str(exc)) from None
        timestamp_pub = self.server.server_key(gun, m.TIMESTAMP)
        return roots.NewCollection(
            (root_pub, signer), targets_signer, snapshot, snapshot_pub, timestamp_pub
        )

    def rotate_root(
        self,
        gun: str,
        *,
        root_key: str | None = None,
        root_cert: Path | None = None,
        old_root_key: str | None = None,
    ) -> dict[str, str]:
        """Replace the root key: the new root is signed by the old root key(s) and the new one."""
        coll = self.fetch(gun)
        old_keys = coll.root.role_keys(m.ROOT)
        signers = targets.signers_for(self.keys, old_keys)
        if old_root_key is not None:
            token = roots.root_signer(self.keys, gun, old_root_key)
            signers += [
                (k, token)
                for k, v in old_keys.items()
                if canonical_key_id(v) == token.public.key_id
            ]
        if len(signers) < coll.root.roles[m.ROOT].threshold:
            raise TrustError(
                f"rotating the root of {gun} needs the current root key "
                f"({', '.join(canonical_key_id(k)[:12] for k in old_keys.values())}): "
                "pass --old-root-key FILE|pkcs11:URI"
            )
        try:
            if root_key is None:
                new: NotarySigner = FileSigner(self.keys.generate("root", gun))
            else:
                new = roots.root_signer(self.keys, gun, root_key)
            new_pub = cert_key(roots.root_certs(self.config.pinning, gun, new, root_cert))
        except KeyStoreError as exc:
            raise TrustError(str(exc)) from None
        data = roots.rotated_root(coll, new_pub, [*signers, (new_pub.key_id, new)])
        self.server.publish(gun, targets.with_snapshot(self.keys, coll, {m.ROOT: data}))
        self.trusted.write(gun, m.ROOT, data)
        return {"root": new_pub.key_id, "root_canonical": canonical_key_id(new_pub)}

    def add_target(
        self, gun: str, name: str, sha256_hex: str, length: int, roles: list[str] | None = None
    ) -> list[str]:
        coll = self.fetch(gun)
        roles = roles or targets.default_roles(self.keys, coll, name)
        self.update(gun, dict.fromkeys(roles, targets.add_target(name, sha256_hex, length)), coll)
        return roles

    def remove_target(self, gun: str, name: str, roles: list[str] | None = None) -> list[str]:
        coll = self.fetch(gun)
        roles = roles or targets.removable_roles(self.keys, coll, name)
        self.update(gun, dict.fromkeys(roles, targets.remove_target(name)), coll)
        return roles

    def add_delegation(
        self,
        gun: str,
        name: str,
        keys: list[PublicKey],
        paths: list[str],
        threshold: int = 1,
    ) -> str:
        role = delegations.delegation_role(name)
        if threshold < 1:
            raise TrustError("threshold must be at least 1")
        coll = self.fetch(gun)
        change = delegations.add_delegation(coll, role, keys, paths, threshold)
        self.update(gun, {m.parent_role(role): change}, coll)
        return role

    def remove_delegation(self, gun: str, name: str, key_ids: list[str] | None = None) -> str:
        """Remove a delegation, or only some of its keys (revoking one pusher's key)."""
        role = delegations.delegation_role(name)
        coll = self.fetch(gun)
        change = delegations.remove_delegation(coll, role, key_ids)
        self.update(gun, {m.parent_role(role): change}, coll)
        return role
