"""`trustyard trust audit`: which keys can sign what, across every collection of a server.

Root keys are reported by their canonical key ID (over the public key), so the per-repository
certificates Notary makes for one root key (seed 001, post 13) show up as one key. Collections
are listed from the server's changefeed.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from trustyard.oci import jsonbounds
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


class _Audit:
    """One audit run: the findings so far and which GUNs each root key signs."""

    def __init__(self, pinning: TrustPinning, soon_days: int) -> None:
        self.pinning = pinning
        self.now = dt.datetime.now(dt.UTC)
        self.soon = self.now + dt.timedelta(days=soon_days)
        self.findings: list[dict[str, str]] = []
        self.roots_by_key: dict[str, set[str]] = {}

    def find(self, gun: str, severity: str, text: str) -> None:
        self.findings.append({"gun": gun, "severity": severity, "finding": text})

    def expiry(self, gun: str, what: str, when: dt.datetime) -> None:
        if when < self.now:
            self.find(gun, "error", f"{what} expired on {_when(when)}")
        elif when < self.soon:
            self.find(gun, "warning", f"{what} expires soon ({_when(when)})")

    def collection(self, gun: str, files: dict[str, bytes]) -> dict[str, Any]:
        """The report entry of one collection (its findings go to `findings`)."""
        entry: dict[str, Any] = {"gun": gun, "owner": owner_of(gun)}
        try:
            root = m.parse_root(files[m.ROOT])
        except m.MetadataError as exc:
            self.find(gun, "error", f"root is malformed: {exc}")
            return entry
        keys = [self.root_key(gun, root, keyid) for keyid in root.roles[m.ROOT].keyids]
        entry["root"] = {"keys": keys, "threshold": root.roles[m.ROOT].threshold}
        entry["expires"] = self.expiries(gun, files)
        entry["signers"] = self.signers(gun, root, files)
        self.trust(gun, root, files)
        return entry

    def root_key(self, gun: str, root: m.Root, keyid: str) -> dict[str, Any]:
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
                self.expiry(gun, f"root certificate {keyid[:12]}", leaf.not_valid_after_utc)
            except PinningError as exc:
                self.find(gun, "error", str(exc))
        self.roots_by_key.setdefault(info["canonical_key_id"], set()).add(gun)
        return info

    def expiries(self, gun: str, files: dict[str, bytes]) -> dict[str, str]:
        found: dict[str, str] = {}
        for role, data in sorted(files.items()):
            try:
                signed = m.parse_signed(role, data)
            except m.MetadataError as exc:
                self.find(gun, "error", f"{role} is malformed: {exc}")
                continue
            found[role] = _when(signed.expires)
            if role != m.TIMESTAMP or signed.expires < self.now:  # the server re-signs these
                self.expiry(gun, f"{role} metadata", signed.expires)
        return found

    def signers(self, gun: str, root: m.Root, files: dict[str, bytes]) -> list[dict[str, Any]]:
        """Who may sign: the targets keys, then every delegation's keys and paths."""
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
                    self.find(gun, "info", f"delegation {name} may sign every tag (all paths)")
        return signers

    def trust(self, gun: str, root: m.Root, files: dict[str, bytes]) -> None:
        """Does the collection verify, and is its root pinned (and does it match the pin)?"""
        try:
            verify_collection(gun, files, TrustPinning(), now=self.now)
        except VerifyError as exc:
            self.find(gun, "error", f"trust data does not verify: {exc}")
        if not self.pinning.is_pinned(gun):
            self.find(gun, "warning", "root is not pinned: clients trust it on first use")
        else:
            try:
                check_root(gun, root, self.pinning, tofu_ok=False, now=self.now)
            except PinningError as exc:
                self.find(gun, "error", f"root does not match its pin: {exc}")

    def shared_roots(self) -> dict[str, list[str]]:
        """Root keys used by several GUNs; a warning where the GUNs have different owners."""
        for keyid, guns in sorted(self.roots_by_key.items()):
            owners = sorted({owner_of(g) for g in guns})
            if len(owners) > 1:
                for gun in sorted(guns):
                    text = f"root key {keyid[:16]} is shared across owners {', '.join(owners)}"
                    self.find(gun, "warning", text)
        return {k: sorted(g) for k, g in self.roots_by_key.items() if len(g) > 1}


def audit(client: TrustClient, prefix: str = "", *, soon_days: int = 30) -> dict[str, Any]:
    """Every collection under `prefix`: root keys, expiries, who may sign what, findings."""
    run = _Audit(client.config.pinning, soon_days)
    collections: list[dict[str, Any]] = []
    for gun in list_guns(client, prefix):
        files = top_files(client.server, gun)
        if m.ROOT not in files:
            continue
        fetch_delegations(client.server, gun, files)
        collections.append(run.collection(gun, files))
    shared = run.shared_roots()
    return {"collections": collections, "findings": run.findings, "shared_root_keys": shared}
