"""The metadata documents the client signs: envelopes, snapshots, root certificates, expiries."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustyard.crypto.notary_keys import b64, canonical_json
from trustyard.trust import model as m
from trustyard.trust.client.keys import FileSigner, NotarySigner

ROOT_LIFETIME = dt.timedelta(days=3650)
TARGETS_LIFETIME = dt.timedelta(days=3 * 365)


def expiry(lifetime: dt.timedelta) -> str:
    return m.format_time(dt.datetime.now(dt.UTC) + lifetime)


def envelope(signed: dict[str, Any], signers: list[tuple[str, NotarySigner]]) -> bytes:
    """`{"signed","signatures"}` canonical bytes; each signer signs under the given key ID
    (an x509 root key signs under its certificate's ID)."""
    message = canonical_json(signed)
    sigs = [
        {"keyid": keyid, "method": s.method, "sig": b64(s.sign(message))} for keyid, s in signers
    ]
    return canonical_json({"signatures": sigs, "signed": signed})


def snapshot_file(
    files: dict[str, bytes], previous: dict[str, Any], version: int, signers: list[Any]
) -> bytes:
    """A snapshot naming `files` (over the `previous` meta map), signed by `signers`
    ((key ID, signer) pairs)."""
    meta = dict(previous)
    for role, data in files.items():
        if role != m.SNAPSHOT:
            meta[role] = m.FileMeta.of(data).to_json()
    body = {
        "_type": "Snapshot",
        "expires": expiry(TARGETS_LIFETIME),
        "meta": meta,
        "version": version,
    }
    return envelope(body, signers)


def empty_targets(version: int) -> dict[str, Any]:
    """The `signed` body of a targets role that signs nothing and delegates nothing."""
    return {
        "_type": "Targets",
        "delegations": {"keys": {}, "roles": []},
        "targets": {},
        "version": version,
    }


def self_signed_cert(signer: FileSigner, cn: str, lifetime: dt.timedelta) -> x509.Certificate:
    """A root certificate as Notary makes one: CN = GUN, not a CA, code signing."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    key: Any = signer.key.key
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
        .sign(key, hashes.SHA256())
    )
