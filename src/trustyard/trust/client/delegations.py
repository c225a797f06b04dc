"""Delegations: their names, their keys (a delegate's certificate or public key), and the
changes to a parent role that add or remove one (or some of its keys)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from trustyard.crypto.notary_keys import KeyError_, PublicKey
from trustyard.trust import model as m
from trustyard.trust.client.documents import ROOT_LIFETIME, self_signed_cert
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.keys import FileSigner, KeyStore, KeyStoreError
from trustyard.trust.client.pinning import canonical_key_id, cert_key, public_key_of
from trustyard.trust.client.targets import Change
from trustyard.trust.client.verify import Collection


def delegation_role(name: str) -> str:
    role = name if name.startswith("targets/") else f"targets/{name}"
    if not m.is_delegation(role):
        raise TrustError(f"{name!r} is not a valid delegation name (targets/<name>)")
    return role


def load_delegation_key(path: Path) -> PublicKey:
    """A delegate's certificate (PEM) or public key (PEM/DER) as a Notary key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustError(f"cannot read key {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
        if certs[0].not_valid_after_utc < dt.datetime.now(dt.UTC):
            raise TrustError(f"delegation certificate {path} has expired")
        key = cert_key(certs[:1])
        key.crypto_key()
        return key
    except ValueError:
        pass
    except KeyError_ as exc:
        raise TrustError(f"{path} is not a valid delegation key: {exc}") from None
    for loader in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            key = public_key_of(loader(data))
            key.crypto_key()
            return key
        except (ValueError, KeyError_):
            continue
    raise TrustError(
        f"{path} is not a valid delegation key: expected an X.509 certificate or a public key "
        "(PEM or DER; ECDSA, RSA ≥ 2048 bits or Ed25519)"
    )


def generate_delegate_key(keys: KeyStore, name: str, out_dir: Path) -> tuple[str, Path]:
    """A delegate's own key (stored encrypted) and its self-signed certificate `NAME.crt`."""
    try:
        key = keys.generate("delegation", "")
    except KeyStoreError as exc:
        raise TrustError(str(exc)) from None
    cert = self_signed_cert(FileSigner(key), name, ROOT_LIFETIME)
    path = out_dir / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key.public.key_id, path


def add_delegation(
    coll: Collection, role: str, keys: list[PublicKey], paths: list[str], threshold: int
) -> Change:
    """The change to `role`'s parent that adds the delegation, or adds keys and paths to it."""
    parent = m.parent_role(role)
    if parent not in coll.targets:
        raise TrustError(f"{parent} does not exist in {coll.gun}")
    current = coll.targets[parent].delegations.get(role)
    keyids = list(
        dict.fromkeys([*(current.keys.keyids if current else ()), *(k.key_id for k in keys)])
    )
    if threshold > len(keyids):
        raise TrustError(f"threshold {threshold} is more than the {len(keyids)} keys of {role}")

    def change(body: dict[str, Any]) -> None:
        dele = dict(body.get("delegations") or {})
        dkeys = dict(dele.get("keys") or {})
        dkeys.update({k.key_id: k.to_json() for k in keys})
        others = [r for r in (dele.get("roles") or []) if r.get("name") != role]
        old_paths = list(current.paths) if current else []
        entry = {
            "keyids": keyids,
            "name": role,
            "paths": list(dict.fromkeys([*old_paths, *paths])),
            "threshold": threshold,
        }
        dele["keys"], dele["roles"] = dkeys, [*others, entry]
        body["delegations"] = dele

    return change


def _keys_to_drop(coll: Collection, role: str, key_ids: list[str]) -> set[str]:
    """The key IDs of `role` that the given prefixes name (by ID or canonical ID)."""
    current = coll.targets[m.parent_role(role)]
    drop: set[str] = set()
    for want in key_ids:
        match = [
            k
            for k in current.delegations[role].keys.keyids
            if k.startswith(want) or canonical_key_id(current.delegation_keys[k]).startswith(want)
        ]
        if not match:
            raise TrustError(f"{role} has no key {want}")
        drop |= set(match)
    return drop


def remove_delegation(coll: Collection, role: str, key_ids: list[str] | None) -> Change:
    """The change to `role`'s parent that removes the delegation, or only some of its keys
    (revoking one pusher's key); keys no delegation uses any more go too."""
    current = coll.targets.get(m.parent_role(role), None)
    if current is None or role not in current.delegations:
        raise TrustError(f"{role} is not a delegation of {coll.gun}")
    drop = _keys_to_drop(coll, role, key_ids or [])

    def change(body: dict[str, Any]) -> None:
        dele = dict(body.get("delegations") or {})
        roles = []
        for r in dele.get("roles") or []:
            if r.get("name") == role:
                if not key_ids:
                    continue
                r = dict(r, keyids=[k for k in r["keyids"] if k not in drop])
                if not r["keyids"]:
                    continue
                r["threshold"] = min(int(r["threshold"]), len(r["keyids"]))
            roles.append(r)
        used = {k for r in roles for k in r["keyids"]}
        dele["roles"] = roles
        dele["keys"] = {k: v for k, v in (dele.get("keys") or {}).items() if k in used}
        body["delegations"] = dele

    return change
