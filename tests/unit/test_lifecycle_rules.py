"""Immutable-tag rules (registry/lifecycle.py): which tags they cover, and the refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trustyard.metadata.base import ManifestRecord
from trustyard.metadata.lifecycle_base import TagMove
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.lifecycle import ImmutableRule, TagLifecycle

A = Digest.parse("sha256:" + "a" * 64)
B = Digest.parse("sha256:" + "b" * 64)


class _Store:
    """Tags of one repository in memory (the only reads the checks make)."""

    def __init__(self, tags: dict[str, Digest]) -> None:
        self.tags = tags

    async def get_manifest(self, repository: str, reference: Any) -> ManifestRecord | None:
        digest = self.tags.get(reference)
        return ManifestRecord(repository, digest, "x", 0, b"") if digest else None

    async def tags_of(self, repository: str, digest: str) -> list[str]:
        return sorted(t for t, d in self.tags.items() if str(d) == digest)

    async def tag_history(self, repository: str, tag: str, limit: int) -> list[TagMove]:
        return []


def _lifecycle(tags: dict[str, Digest]) -> TagLifecycle:
    store = _Store(tags)
    return TagLifecycle(store, store, (ImmutableRule("team/*", ("v*", "release-?")),))  # type: ignore[arg-type]


def test_rule_matching() -> None:
    rule = ImmutableRule("team/*", ("v*", "release-?"))
    assert rule.matches("team/app", "v1.2")
    assert rule.matches("team/a/b", "release-1")  # `*` crosses `/`
    assert not rule.matches("team/app", "latest")
    assert not rule.matches("other/app", "v1")
    assert not rule.matches("team/app", "release-10")


def test_new_tag_and_same_digest_pass_move_and_delete_refused() -> None:
    life = _lifecycle({"v1": A, "latest": A})
    asyncio.run(life.check_tag_changes("team/app", ["v2", "latest"], B))  # new tag; not covered
    asyncio.run(life.check_tag_changes("team/app", ["v1"], A))  # the same digest again
    asyncio.run(life.check_tag_changes("other/app", ["v1"], B))  # no rule for the repository
    with pytest.raises(RegistryError) as moved:
        asyncio.run(life.check_tag_changes("team/app", ["v1"], B))
    assert moved.value.code is ErrorCode.DENIED
    assert "team/app:v1 is immutable" in moved.value.message
    assert '{repository = "team/*", tags = ["v*", "release-?"]}' in moved.value.message
    assert f"moved from {A} to {B}" in moved.value.message
    with pytest.raises(RegistryError, match="cannot be deleted"):
        asyncio.run(life.check_tag_changes("team/app", ["v1"], None))
    with pytest.raises(RegistryError, match="cannot be deleted"):
        asyncio.run(life.check_manifest_delete("team/app", A))
    # the administrator's override
    asyncio.run(life.check_tag_changes("team/app", ["v1"], None, force=True))
    asyncio.run(life.check_manifest_delete("team/app", A, force=True))
