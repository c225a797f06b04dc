"""Namespace quotas (registry/quota.py): namespaces, shared blobs counted once, refusals."""

from __future__ import annotations

import asyncio

import pytest

from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.quota import Quotas, Usage

A = Digest.parse("sha256:" + "a" * 64)
B = Digest.parse("sha256:" + "b" * 64)


class _Usage:
    """Blob links and manifests as (repository, digest, size) rows."""

    def __init__(self, rows: list[tuple[str, str, int]]) -> None:
        self.rows = rows

    def _mine(self, namespace: str) -> list[tuple[str, str, int]]:
        return [r for r in self.rows if r[0] == namespace or r[0].startswith(namespace + "/")]

    async def namespace_usage(self, namespace: str) -> int:
        return sum(dict((d, s) for _, d, s in self._mine(namespace)).values())

    async def namespace_holds(self, namespace: str, digest: str) -> bool:
        return any(d == digest for _, d, _ in self._mine(namespace))

    async def usage_rows(self) -> list[tuple[str, str, int]]:
        return self.rows


def test_namespaces_by_depth_and_limits() -> None:
    q = Quotas(_Usage([]), {"team": 10}, default_limit=5, depth=2)
    assert q.namespace_of("team/app/x") == "team/app"
    assert q.namespace_of("solo") == "solo"
    assert q.limit_for("team") == 10 and q.limit_for("other") == 5


def test_shared_blobs_count_once_and_held_blobs_always_pass() -> None:
    usage = _Usage([("team/a", str(A), 60), ("team/b", str(A), 60), ("other/c", str(B), 500)])
    q = Quotas(usage, {"team": 100})
    asyncio.run(q.check_blob("team/c", A, 60))  # already held: adds nothing
    asyncio.run(q.check_blob("team/c", B, 40))  # 60 + 40 = 100: at the limit is fine
    with pytest.raises(RegistryError) as refused:
        asyncio.run(q.check_blob("team/c", B, 41))
    assert refused.value.code is ErrorCode.DENIED
    assert "quota exceeded for namespace team: it uses 60 of 100 bytes" in refused.value.message
    asyncio.run(q.check_blob("other/c", A, 10**9))  # no limit there
    assert asyncio.run(q.show()) == [Usage("other", 500, 0), Usage("team", 60, 100)]
