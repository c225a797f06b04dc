"""What the mirror's upstream client answers and raises, without the client itself.

The use cases (`registry/mirror*.py`) catch these and read these answers; keeping them apart
from `remote/upstream.py` means a worker with no mirror configured never imports httpx
(7 MiB per worker, docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from trustyard.remote.errors import RemoteError


class UpstreamUnavailable(RemoteError):
    """The upstream did not answer usefully right now (down, timed out, 5xx, rate-limited)."""


class UpstreamNotFound(RemoteError):
    """The upstream answered 404: it has no such repository, manifest or blob."""


@dataclass(frozen=True, slots=True)
class ManifestHead:
    digest: str | None  # Docker-Content-Digest, when the upstream sent one
    media_type: str
    size: int | None


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    content: bytes
    media_type: str
    digest: str | None  # as the upstream declared it (the caller verifies the bytes)
