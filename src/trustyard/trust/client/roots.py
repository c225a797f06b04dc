"""Root keys: the signer and certificate of a new collection's root, its first files, rotation.

A root key is a file key (one for every collection, as Notary does) or a key in a PKCS#11
token; its certificate is self-signed (CN = GUN) or given (`--root-cert`, checked against the
key, the GUN and a pinned CA).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from trustyard.crypto.notary_keys import PublicKey
from trustyard.trust import model as m
from trustyard.trust.client.documents import (
    ROOT_LIFETIME,
    TARGETS_LIFETIME,
    empty_targets,
    envelope,
    expiry,
    self_signed_cert,
    snapshot_file,
)
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.keys import FileSigner, KeyStore, NotarySigner, TokenSigner
from trustyard.trust.client.pinning import (
    PinningError,
    TrustPinning,
    canonical_key_id,
    chains_to,
    check_leaf,
    load_ca_file,
    public_key_of,
)
from trustyard.trust.client.verify import Collection


def read_key_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TrustError(f"cannot read {what} {path}: {exc.strerror}") from None


def root_signer(keys: KeyStore, gun: str, root_key: str | None) -> NotarySigner:
    """The root key a `--root-key FILE|pkcs11:URI` names, else the client's one root key
    (made on first use)."""
    if root_key and root_key.startswith("pkcs11:"):
        return TokenSigner(root_key)
    if root_key:
        data = read_key_file(root_key, "root key")
        return FileSigner(keys.import_key(data, "root", gun, root_key))
    existing = keys.ids("root")
    if existing:  # one root key for every collection, as Notary does
        return keys.signer(existing[0])
    return FileSigner(keys.generate("root", gun))


def root_certs(
    pinning: TrustPinning, gun: str, signer: NotarySigner, root_cert: Path | None
) -> list[x509.Certificate]:
    """The root certificate chain: self-signed for a file key, else `root_cert`, which must be
    for the key and the GUN and, with a pinned CA, issued by it."""
    now = dt.datetime.now(dt.UTC)
    if root_cert is None:
        if not isinstance(signer, FileSigner):
            raise TrustError(
                "a root key in a PKCS#11 token needs --root-cert (a certificate with "
                f"CN={gun} for the token's public key, e.g. issued by your CA)"
            )
        return [self_signed_cert(signer, gun, ROOT_LIFETIME)]
    try:
        certs = x509.load_pem_x509_certificates(root_cert.read_bytes())
    except OSError as exc:
        raise TrustError(f"cannot read root certificate {root_cert}: {exc.strerror}") from None
    except ValueError:
        raise TrustError(f"{root_cert} is not a PEM certificate") from None
    if public_key_of(certs[0].public_key()).key_id != signer.public.key_id:
        raise TrustError(f"root certificate {root_cert} is not for the root key")
    try:
        check_leaf(gun, certs[0], now)
        ca = pinning.ca_file(gun)
        if ca is not None and not chains_to(certs, load_ca_file(ca), now):
            raise TrustError(f"root certificate {root_cert} is not issued by the CA {ca}")
    except PinningError as exc:
        raise TrustError(str(exc)) from None
    return certs


def targets_signer(keys: KeyStore, gun: str, targets_key: str | None) -> NotarySigner:
    """The targets key a `--targets-key FILE|pkcs11:URI` names, else a new one."""
    if targets_key and targets_key.startswith("pkcs11:"):
        return keys.add_token(targets_key, "targets", gun)
    if targets_key:
        data = read_key_file(targets_key, "targets key")
        return FileSigner(keys.import_key(data, "targets", gun, targets_key))
    return FileSigner(keys.generate("targets", gun))


@dataclass(frozen=True)
class NewCollection:
    """The keys of a collection about to be made (snapshot: None when the server signs it)."""

    root: tuple[PublicKey, NotarySigner]
    targets: NotarySigner
    snapshot: NotarySigner | None
    snapshot_public: PublicKey
    timestamp_public: PublicKey

    def files(self) -> dict[str, bytes]:
        """Root 1, targets 1 and, when the client holds the snapshot key, snapshot 1."""
        root_pub, root_signer_ = self.root
        keys = {
            m.ROOT: root_pub,
            m.TARGETS: self.targets.public,
            m.SNAPSHOT: self.snapshot_public,
            m.TIMESTAMP: self.timestamp_public,
        }
        root_body = {
            "_type": "Root",
            "consistent_snapshot": False,
            "expires": expiry(ROOT_LIFETIME),
            "keys": {k.key_id: k.to_json() for k in keys.values()},
            "roles": {r: {"keyids": [k.key_id], "threshold": 1} for r, k in keys.items()},
            "version": 1,
        }
        files = {m.ROOT: envelope(root_body, [(root_pub.key_id, root_signer_)])}
        targets_body = {**empty_targets(1), "expires": expiry(TARGETS_LIFETIME)}
        files[m.TARGETS] = envelope(targets_body, [(self.targets.public.key_id, self.targets)])
        if self.snapshot is not None:
            signers = [(self.snapshot.public.key_id, self.snapshot)]
            files[m.SNAPSHOT] = snapshot_file(files, {}, 1, signers)
        return files

    def ids(self) -> dict[str, str]:
        root_pub = self.root[0]
        return {
            "root": root_pub.key_id,
            "root_canonical": canonical_key_id(root_pub),
            "targets": self.targets.public.key_id,
            "snapshot": self.snapshot_public.key_id,
            "timestamp": self.timestamp_public.key_id,
        }


def rotated_root(
    coll: Collection, new_pub: PublicKey, signers: list[tuple[str, NotarySigner]]
) -> bytes:
    """The next root: `new_pub` is the only root key, old root keys no other role uses are
    dropped; signed by the old root key(s) in `signers` and the new key (last in `signers`)."""
    body: Any = json.loads(coll.raw[m.ROOT])["signed"]
    used = {k for r, v in body["roles"].items() if r != m.ROOT for k in v["keyids"]}
    body["keys"] = {k: v for k, v in body["keys"].items() if k in used}
    body["keys"][new_pub.key_id] = new_pub.to_json()
    body["roles"][m.ROOT] = {"keyids": [new_pub.key_id], "threshold": 1}
    body["version"] = int(body["version"]) + 1
    body["expires"] = expiry(ROOT_LIFETIME)
    return envelope(body, signers)
