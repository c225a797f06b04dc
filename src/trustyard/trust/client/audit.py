"""`trustyard trust audit`: which keys can sign what, across every collection of a server.

Root keys are reported by their canonical key ID (over the public key), so the per-repository
certificates Notary makes for one root key (seed 001, post 13) show up as one key. Collections
are listed from the server's changefeed.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from trustyard import jsonbounds
from trustyard.trust import model as m
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.fetch import fetch_delegations, top_files
from trustyard.trust.client.pinning import (
    PinningError,
    TrustPinning,
    canonical_key_id,
    cert_bundle,
    check_root,
    common_name,
)
from trustyard.trust.client.verify import VerifyError, verify_collection

if TYPE_CHECKING:
    from trustyard.trust.client.repository import TrustClient

PAGE = 1000


def owner_of(gun: str) -> str:
    """The namespace that owns a GUN: the first path component after a registry host."""
    parts = gun.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        return parts[1]
    return parts[0] if len(parts) > 1 else gun


def list_guns(client: TrustClient, prefix: str) -> list[str]:
    live: dict[str, bool] = {}
    change_id = 0
    while True:
        r = client.server.request(
            "GET", "/v2/_trust/changefeed", params={"change_id": change_id, "records": PAGE}
        )
        if r.status_code != 200:
            raise client.server.fail(r, "cannot list collections (changefeed)")
        try:
            records = jsonbounds.loads(r.content, what="the changefeed").get("records") or []
        except ValueError:
            raise TrustError("the changefeed is not JSON") from None
        for rec in records:
            live[str(rec["GUN"])] = rec.get("Category") != "deletion"
            change_id = max(change_id, int(rec["ID"]))
        if len(records) < PAGE:
            break
    return sorted(g for g, ok in live.items() if ok and g.startswith(prefix))


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def audit(client: TrustClient, prefix: str = "", *, soon_days: int = 30) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    soon = now + dt.timedelta(days=soon_days)
    pinning = client.config.pinning
    collections: list[dict[str, Any]] = []
    findings: list[dict[str, str]] = []

    def find(gun: str, severity: str, text: str) -> None:
        findings.append({"gun": gun, "severity": severity, "finding": text})

    def expiry(gun: str, what: str, when: dt.datetime) -> None:
        if when < now:
            find(gun, "error", f"{what} expired on {_when(when)}")
        elif when < soon:
            find(gun, "warning", f"{what} expires soon ({_when(when)})")

    roots_by_key: dict[str, set[str]] = {}
    for gun in list_guns(client, prefix):
        files = top_files(client.server, gun)
        if m.ROOT not in files:
            continue
        fetch_delegations(client.server, gun, files)
        entry: dict[str, Any] = {"gun": gun, "owner": owner_of(gun)}
        collections.append(entry)
        try:
            root = m.parse_root(files[m.ROOT])
        except m.MetadataError as exc:
            find(gun, "error", f"root is malformed: {exc}")
            continue
        keys = []
        for keyid in root.roles[m.ROOT].keyids:
            key = root.keys[keyid]
            info: dict[str, Any] = {
                "key_id": keyid,
                "canonical_key_id": canonical_key_id(key),
                "keytype": key.keytype,
            }
            if key.keytype.endswith("-x509"):
                try:
                    leaf = cert_bundle(key)[0]
                    info["subject_cn"] = common_name(leaf)
                    info["issuer"] = leaf.issuer.rfc4514_string()
                    info["self_signed"] = leaf.issuer == leaf.subject
                    info["not_after"] = _when(leaf.not_valid_after_utc)
                    expiry(gun, f"root certificate {keyid[:12]}", leaf.not_valid_after_utc)
                except PinningError as exc:
                    find(gun, "error", str(exc))
            keys.append(info)
            roots_by_key.setdefault(info["canonical_key_id"], set()).add(gun)
        entry["root"] = {"keys": keys, "threshold": root.roles[m.ROOT].threshold}
        entry["expires"] = {}
        for role, data in sorted(files.items()):
            try:
                signed = m.parse_signed(role, data)
            except m.MetadataError as exc:
                find(gun, "error", f"{role} is malformed: {exc}")
                continue
            entry["expires"][role] = _when(signed.expires)
            if role != m.TIMESTAMP or signed.expires < now:  # the server re-signs timestamps
                expiry(gun, f"{role} metadata", signed.expires)
        signers: list[dict[str, Any]] = [
            {
                "role": m.TARGETS,
                "keys": [canonical_key_id(k) for k in root.role_keys(m.TARGETS).values()],
                "threshold": root.roles[m.TARGETS].threshold,
            }
        ]
        for role in sorted(r for r in files if r.startswith(m.TARGETS)):
            try:
                parsed = m.parse_targets(role, files[role])
            except m.MetadataError:
                continue
            for name, dele in sorted(parsed.delegations.items()):
                signers.append(
                    {
                        "role": name,
                        "keys": [
                            canonical_key_id(parsed.delegation_keys[k]) for k in dele.keys.keyids
                        ],
                        "threshold": dele.keys.threshold,
                        "paths": list(dele.paths),
                    }
                )
                if "" in dele.paths:
                    find(gun, "info", f"delegation {name} may sign every tag (all paths)")
        entry["signers"] = signers
        try:
            verify_collection(gun, files, TrustPinning(), now=now)
        except VerifyError as exc:
            find(gun, "error", f"trust data does not verify: {exc}")
        if not pinning.is_pinned(gun):
            find(gun, "warning", "root is not pinned: clients trust it on first use")
        else:
            try:
                check_root(gun, root, pinning, tofu_ok=False, now=now)
            except PinningError as exc:
                find(gun, "error", f"root does not match its pin: {exc}")
    for keyid, guns in sorted(roots_by_key.items()):
        owners = sorted({owner_of(g) for g in guns})
        if len(owners) > 1:
            for gun in sorted(guns):
                find(
                    gun,
                    "warning",
                    f"root key {keyid[:16]} is shared across owners {', '.join(owners)}",
                )
    shared = {k: sorted(g) for k, g in roots_by_key.items() if len(g) > 1}
    return {"collections": collections, "findings": findings, "shared_root_keys": shared}
