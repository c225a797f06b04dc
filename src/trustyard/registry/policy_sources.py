"""What a signature policy reads back from this registry: blobs, manifests, referrers and the
simple signatures of the extension API, as one object over the `Registry` use case.

The composition root builds one and hands `context()` to `build_policy`; the checks never see
a backend, and the policy's reads go through the same stores the requests use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from trustyard.metadata.authority_base import AuthorityStore
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import Descriptor
from trustyard.registry.policy import PolicyContext, TrustFiles
from trustyard.registry.service import Registry
from trustyard.registry.signatures import SignatureStore

STATEMENT_PAGE = 1000
Audit = Callable[[str, dict[str, Any]], Awaitable[None]]


class RegistrySources:
    def __init__(
        self,
        registry: Registry,
        signatures: SignatureStore,
        authority: AuthorityStore | None = None,
    ) -> None:
        self.registry = registry
        self.signatures = signatures
        self.authority = authority

    async def read_blob(self, digest: Digest, limit: int) -> bytes | None:
        """A blob's bytes, or None when it is missing or larger than `limit`."""
        storage = self.registry.storage
        stat = await storage.stat(digest)
        if stat is None or stat.size > limit:
            return None
        data = b""
        async for chunk in storage.read(digest):
            data += chunk
        return data

    async def get_manifest(self, repository: str, digest: Digest) -> ManifestRecord | None:
        return await self.registry.metadata.get_manifest(repository, digest)

    async def get_tagged(self, repository: str, tag: str) -> ManifestRecord | None:
        return await self.registry.metadata.get_manifest(repository, tag)

    async def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        return (await self.registry.referrers(repository, digest, None)).descriptors

    async def simple_signatures(self, repository: str, digest: Digest) -> list[bytes]:
        return [s.content for s in await self.signatures.list_signatures(repository, digest)]

    async def authority_statements(self) -> list[bytes]:
        """Every stored authority statement (kind `authority` evaluates them itself)."""
        assert self.authority is not None
        out: list[bytes] = []
        last: str | None = None
        while True:
            page = await self.authority.list_statements(STATEMENT_PAGE, last)
            out += [s.content for s in page]
            if len(page) < STATEMENT_PAGE:
                return out
            last = page[-1].id

    async def authority_generation(self) -> int:
        """The statement count: the store is append-only, so it changes with every addition."""
        assert self.authority is not None
        return await self.authority.count_statements()

    def context(self, trust_files: TrustFiles | None, audit: Audit | None) -> PolicyContext:
        ctx = PolicyContext(
            self.read_blob,
            self.get_manifest,
            trust_files,
            self.get_tagged,
            self.referrers,
            self.simple_signatures,
        )
        ctx.audit = audit
        if self.authority is not None:
            ctx.authority_statements = self.authority_statements
            ctx.authority_generation = self.authority_generation
        return ctx
