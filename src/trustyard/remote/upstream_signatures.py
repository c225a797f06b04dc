"""Reading an upstream registry's signature material for the mirror's verified admission.

What the signature policy needs to judge an image before the mirror caches it, fetched from
the upstream with the client the mirror already authenticated (`remote.upstream`):
manifests (cosign's `sha256-<hex>.sig` tag, referrer artifacts), small blobs (their payloads),
the referrers of a digest (OCI 1.1 API, else the tag-schema index) and containers simple
signatures (the extension API trustyard and OpenShift serve, or a lookaside URL laid out as
containers/image's `<lookaside>/<repo>@sha256=<hex>/signature-N`). Every body is read with a
size cap and a deadline (`remote.bounded`); nothing is trusted to be small or quick.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import httpx

from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.oci.manifest import Descriptor
from trustyard.remote.bounded import BodyError, aread_body, loads_json
from trustyard.remote.errors import RemoteError
from trustyard.remote.upstream import UpstreamRegistry
from trustyard.remote.upstream_errors import UpstreamNotFound

ACCEPT = ", ".join([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_MANIFEST_LIST])
MAX_LISTING = 1024 * 1024  # a referrers list or an extension-API signature list
MAX_REFERRER_ENTRIES = 256
MAX_LOOKASIDE = 16  # signature-1 … signature-16
MAX_SIGNATURE = 64 * 1024  # one simple signature (the registry's own upload limit)
DEADLINE = 30.0


class UpstreamReadError(RemoteError):
    """The upstream answered something other than the thing or a clean 404."""


class HttpSignatureSource:
    """Signature material of one upstream registry, read through the mirror's authenticated
    `UpstreamRegistry` (token or Basic auth, pull scope of the repository read)."""

    def __init__(
        self,
        upstream: UpstreamRegistry,
        *,
        lookaside: str | None = None,
        lookaside_client: httpx.AsyncClient | None = None,
        deadline: float = DEADLINE,
    ) -> None:
        self.upstream = upstream
        self.lookaside = lookaside.rstrip("/") if lookaside else None
        # Lookaside servers are plain web servers, possibly elsewhere: no registry credentials.
        self.lookaside_client = lookaside_client
        self.deadline = deadline

    async def _get(
        self,
        path: str,
        repository: str,
        limit: int,
        what: str,
        headers: dict[str, str] | None = None,
    ) -> tuple[httpx.Response, bytes] | None:
        """(response, body) for a 200, None for a 404; anything else is UpstreamReadError
        (an `UpstreamUnavailable` when the upstream is down or too slow)."""
        try:
            response = await self.upstream.get_bytes(
                path, limit=limit, scope=UpstreamRegistry.pull_scope(repository), headers=headers
            )
        except UpstreamNotFound:
            return None
        if response.status_code != 200:
            raise UpstreamReadError(
                f"{what}: upstream answered {response.status_code} "
                f"{response.content[:200].decode(errors='replace')}"
            )
        return response, response.content

    async def _get_plain(
        self, client: httpx.AsyncClient, url: str, limit: int, what: str
    ) -> bytes | None:
        """A lookaside GET: bounded, 404 is None, anything else UpstreamReadError."""
        try:
            request = client.build_request("GET", url)
            response = await client.send(request, stream=True, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise UpstreamReadError(
                f"{what}: lookaside unreachable ({exc.__class__.__name__})"
            ) from None
        try:
            if response.status_code == 404:
                return None
            if response.status_code != 200:
                raise UpstreamReadError(f"{what}: lookaside answered {response.status_code}")
            return await aread_body(response, limit, what, deadline=self.deadline)
        except BodyError as exc:
            raise UpstreamReadError(str(exc)) from None
        finally:
            await response.aclose()

    async def manifest(
        self, repository: str, reference: str, limit: int
    ) -> tuple[str, bytes] | None:
        """(media type, bytes) of a manifest by tag or digest, or None when it does not exist."""
        got = await self._get(
            f"/v2/{repository}/manifests/{reference}",
            repository,
            limit,
            f"manifest {repository}:{reference}"[:300],
            {"Accept": ACCEPT},
        )
        if got is None:
            return None
        response, body = got
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return media_type, body

    async def blob(self, repository: str, digest: Digest, limit: int) -> bytes | None:
        got = await self._get(
            f"/v2/{repository}/blobs/{digest}", repository, limit, f"blob {digest}"
        )
        return None if got is None else got[1]

    async def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        """The referrers of `digest`: the OCI 1.1 API, or the tag-schema index it stands for."""
        got = await self._get(
            f"/v2/{repository}/referrers/{digest}",
            repository,
            MAX_LISTING,
            f"referrers of {digest}",
            {"Accept": mt.OCI_INDEX},
        )
        if got is None:
            fallback = await self.manifest(
                repository, f"{digest.algorithm}-{digest.hex}", MAX_LISTING
            )
            if fallback is None:
                return []
            body = fallback[1]
        else:
            body = got[1]
        return _descriptors(loads_json(body, f"referrers of {digest}"))

    async def simple_signatures(self, repository: str, digest: Digest) -> list[bytes]:
        """Simple signatures from the lookaside URL when one is configured, else through the
        extension API (a registry without it answers 404: no signatures)."""
        if self.lookaside is not None:
            return await self._lookaside(repository, digest)
        got = await self._get(
            f"/extensions/v2/{repository}/signatures/{digest}",
            repository,
            MAX_LISTING,
            f"simple signatures of {digest}",
        )
        if got is None:
            return []
        doc = loads_json(got[1], f"simple signatures of {digest}")
        entries = doc.get("signatures") if isinstance(doc, dict) else None
        if not isinstance(entries, list):
            raise UpstreamReadError(f"simple signatures of {digest}: no `signatures` list")
        out: list[bytes] = []
        for entry in entries[:MAX_REFERRER_ENTRIES]:
            content = entry.get("content") if isinstance(entry, dict) else None
            if not isinstance(content, str):
                continue
            try:
                data = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                continue
            if len(data) <= MAX_SIGNATURE:
                out.append(data)
        return out

    async def _lookaside(self, repository: str, digest: Digest) -> list[bytes]:
        client = self.lookaside_client
        own = client is None
        if client is None:
            client = httpx.AsyncClient(timeout=self.deadline)
        try:
            out: list[bytes] = []
            for n in range(1, MAX_LOOKASIDE + 1):
                url = f"{self.lookaside}/{repository}@{digest.algorithm}={digest.hex}/signature-{n}"
                got = await self._get_plain(client, url, MAX_SIGNATURE, f"lookaside signature-{n}")
                if got is None:
                    break
                out.append(got)
            return out
        finally:
            if own:
                await client.aclose()


def _descriptors(doc: Any) -> list[Descriptor]:
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise UpstreamReadError("referrers: the answer is not an index with `manifests`")
    out = []
    for entry in entries[:MAX_REFERRER_ENTRIES]:
        if not isinstance(entry, dict):
            continue
        try:
            digest = Digest.parse(str(entry.get("digest")))
        except RegistryError:
            continue
        size = entry.get("size")
        artifact_type = entry.get("artifactType")
        out.append(
            Descriptor(
                str(entry.get("mediaType") or mt.OCI_MANIFEST),
                digest,
                size if isinstance(size, int) else 0,
                artifact_type if isinstance(artifact_type, str) else None,
            )
        )
    return out
