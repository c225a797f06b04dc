"""Every registry policy decision is also a trust audit event (the trust_audit table), in
enforce and warn mode, on pull and on protected-tag push; a failing audit write does not change
the decision."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from trustyard.metadata.base import ManifestRecord
from trustyard.metadata.trust_sql import SqlTrustStore
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.registry.policy import (
    KINDS,
    Decision,
    PolicyContext,
    build_policy,
    register_kind,
)
from trustyard.trust.server.policy_audit import ACTOR, PolicyAudit
from trustyard.wiring import open_database


class Fixed:
    """A check that says what its spec says: `ok`, with a reason."""

    kind = "fixed"

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        self.ok = bool(spec.get("ok"))

    async def verify(self, repository: str, rec: ManifestRecord, tag: str | None) -> Decision:
        return Decision(self.ok, "signed" if self.ok else "no signature", "k1" if self.ok else None)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlTrustStore]:
    metadata = (await open_database(tmp_path / "metadata.db", create=True)).metadata
    register_kind("fixed", Fixed)
    try:
        yield SqlTrustStore(metadata.reader, metadata.writer)
    finally:
        del KINDS["fixed"]
        await metadata.reader.dispose()
        await metadata.writer.dispose()


def rec(repository: str) -> ManifestRecord:
    body = json.dumps({"schemaVersion": 2}).encode()
    digest = Digest("sha256", hashlib.sha256(body).hexdigest())
    return ManifestRecord(repository, digest, "application/vnd.oci.image.manifest.v1+json", 0, body)


async def no_blob(digest: Digest, limit: int) -> bytes | None:
    return None


async def no_manifest(repository: str, digest: Digest) -> ManifestRecord | None:
    return None


def ctx(store: SqlTrustStore) -> PolicyContext:
    return PolicyContext(no_blob, no_manifest, audit=PolicyAudit(store))


async def test_decisions_are_audit_events(store: SqlTrustStore) -> None:
    rules = [
        {"name": "signed-only", "repositories": ["prod/*"], "require": {"kind": "fixed"},
         "protect_tags": ["release-*"]},
        {"name": "watch", "repositories": ["dev/*"], "mode": "warn",
         "require": {"kind": "fixed"}},
        {"name": "open", "repositories": ["ok/*"], "require": {"kind": "fixed", "ok": True}},
    ]  # fmt: skip
    policy = build_policy(rules, ctx(store))
    with pytest.raises(RegistryError, match="signed-only"):
        await policy.on_pull("prod/app", "v1", rec("prod/app"))
    with pytest.raises(RegistryError, match="signed-only"):
        await policy.on_push("prod/app", ["latest", "release-1"], rec("prod/app"))
    await policy.on_pull("dev/app", "v1", rec("dev/app"))  # warn: let through
    await policy.on_pull("ok/app", None, rec("ok/app"))
    await policy.on_pull("elsewhere/app", "v1", rec("elsewhere/app"))  # no rule: no decision

    prod = await store.audit_events("prod/app")
    assert [(e.action, e.actor) for _, e in prod] == [
        ("policy_pull", ACTOR),
        ("policy_push", ACTOR),
    ]
    pull, push = prod[0][1].detail, prod[1][1].detail
    assert pull["allowed"] is False and pull["mode"] == "enforce"
    assert pull["policy"] == "signed-only" and pull["kind"] == "fixed"
    assert pull["reason"] == "no signature" and pull["reference"] == "v1"
    assert push["reference"] == "release-1"  # only the protected tag is decided
    [(_, warn)] = await store.audit_events("dev/app")
    assert warn.detail["allowed"] is False and warn.detail["mode"] == "warn"
    [(_, ok)] = await store.audit_events("ok/app")
    digest = str(rec("ok/app").digest)
    assert ok.detail["allowed"] is True and ok.detail["signer"] == "k1"
    assert ok.detail["reference"] == digest and ok.detail["digest"] == digest
    assert await store.audit_events("elsewhere/app") == []


async def test_a_failing_audit_write_changes_no_decision(store: SqlTrustStore) -> None:
    async def broken(repository: str, event: dict[str, Any]) -> None:
        raise OSError("disk full")

    context = PolicyContext(no_blob, no_manifest, audit=broken)
    rules = [{"name": "p", "repositories": ["*"], "require": {"kind": "fixed"}}]
    with capture_logs() as logs, pytest.raises(RegistryError, match="denied"):
        await build_policy(rules, context).on_pull("a/b", "v1", rec("a/b"))
    events = [entry["event"] for entry in logs]
    assert events == ["policy_decision", "policy_audit_failed"]
    allowing = [{"name": "p", "repositories": ["*"], "require": {"kind": "fixed", "ok": True}}]
    await build_policy(allowing, context).on_pull("a/b", "v1", rec("a/b"))  # still allowed
