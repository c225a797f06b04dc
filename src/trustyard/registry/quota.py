"""Quotas per namespace: bytes, checked before a blob or manifest is committed.

A namespace is the first `depth` path components of a repository name (`team` of `team/app`
at depth 1). Its usage is every distinct blob linked into any of its repositories, counted once
however many repositories share it, plus the bytes of its manifests. A blob another namespace
also holds counts fully in each (quotas are about what a namespace keeps alive). An upload or a
push that would take the namespace over its limit is refused with `403 DENIED` before the bytes
are committed, and the upload session is ended, so nothing of it stays stored. The check reads
the usage, then commits: two concurrent pushes may each pass and together exceed the limit by
at most their own size (a soft limit, as Harbor's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from trustyard.metadata.lifecycle_base import NamespaceUsage
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError


@dataclass(frozen=True, slots=True)
class Usage:
    namespace: str
    used: int
    limit: int  # 0: no limit


class Quotas:
    def __init__(
        self, usage: NamespaceUsage, limits: dict[str, int], default_limit: int = 0, depth: int = 1
    ) -> None:
        self.usage = usage
        self.limits = limits
        self.default_limit = default_limit
        self.depth = depth

    def namespace_of(self, repository: str) -> str:
        return "/".join(repository.split("/")[: self.depth])

    def limit_for(self, namespace: str) -> int:
        return self.limits.get(namespace, self.default_limit)

    async def check_blob(self, repository: str, digest: Digest, size: int) -> None:
        """Refuse a blob that would take the namespace over its quota (a blob the namespace
        already holds adds nothing)."""
        namespace = self.namespace_of(repository)
        limit = self.limit_for(namespace)
        if not limit or await self.usage.namespace_holds(namespace, str(digest)):
            return
        await self._check(namespace, limit, size, f"blob {digest}")

    async def check_manifest(self, repository: str, digest: Digest, size: int) -> None:
        namespace = self.namespace_of(repository)
        limit = self.limit_for(namespace)
        if limit:
            await self._check(namespace, limit, size, f"manifest {digest}")

    async def _check(self, namespace: str, limit: int, size: int, what: str) -> None:
        used = await self.usage.namespace_usage(namespace)
        if used + size > limit:
            raise RegistryError(
                ErrorCode.DENIED,
                f"quota exceeded for namespace {namespace}: it uses {used} of {limit} bytes, and "
                f"{what} ({size} bytes) would take it over; delete tags and run GC, or ask an "
                "administrator to raise lifecycle.quotas",
                detail={"namespace": namespace, "used": used, "limit": limit, "size": size},
            )

    async def show(self) -> list[Usage]:
        """Every namespace holding anything, and every one with a configured limit."""
        seen: dict[str, set[str]] = defaultdict(set)
        used: dict[str, int] = defaultdict(int)
        for repository, digest, size in await self.usage.usage_rows():
            namespace = self.namespace_of(repository)
            if digest not in seen[namespace]:
                seen[namespace].add(digest)
                used[namespace] += size
        names = sorted(set(used) | set(self.limits))
        return [Usage(n, used.get(n, 0), self.limit_for(n)) for n in names]
