"""Reading an upstream's Notary v1 trust data for the mirror's verified admission.

The upstream's trust server (trustyard serves it on the registry's own port; a notary-server may
be elsewhere) is read through an `UpstreamRegistry`, so the mirror's credentials, TLS settings
and the Docker token flow (scope `repository:<gun>:pull`, as Notary clients ask) apply. Every
file is read under `MAX_METADATA` bytes and the upstream's deadlines; verifying what was read
is the trust client's job (trust/client/remote.fetch_verified), not this module's.
"""

from __future__ import annotations

from trustyard.remote.errors import RemoteError
from trustyard.remote.upstream import UpstreamRegistry
from trustyard.remote.upstream_errors import UpstreamNotFound

MAX_METADATA = 16 * 1024 * 1024  # as the policy's own remote reads (trust/client/remote.py)


class UpstreamTrustFiles:
    """`FileSource` (trust/client/remote.py) over an upstream trust server.

    404 is None (no such role: the verification says what is missing); `UpstreamUnavailable`
    when the server is down or too slow; `RemoteError` for any other answer."""

    def __init__(self, upstream: UpstreamRegistry) -> None:
        self.upstream = upstream

    @property
    def url(self) -> str:
        return self.upstream.base_url

    async def get(self, gun: str, role: str) -> bytes | None:
        return await self._get(gun, f"{role}.json", f"{role} of {gun}")

    async def get_root_version(self, gun: str, version: int) -> bytes | None:
        return await self._get(gun, f"{version}.root.json", f"root version {version} of {gun}")

    async def _get(self, gun: str, name: str, what: str) -> bytes | None:
        try:
            response = await self.upstream.get_bytes(
                f"/v2/{gun}/_trust/tuf/{name}",
                limit=MAX_METADATA,
                scope=UpstreamRegistry.pull_scope(gun),
            )
        except UpstreamNotFound:
            return None
        if response.status_code != 200:
            detail = response.content[:200].decode("utf-8", "replace")
            raise RemoteError(
                f"{what}: trust server {self.url} answered HTTP {response.status_code} ({detail})"
            )
        return response.content
