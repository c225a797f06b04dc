"""Storage ports: where blob bytes and in-progress uploads live.

Two small Protocols, as in Distribution's storage drivers: `BlobStore` for committed,
content-addressed blobs and `UploadStore` for upload sessions. A backend implements both, and signals failures with the types in `storage/errors.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from trustyard.oci.digest import Digest


@dataclass(frozen=True, slots=True)
class BlobStat:
    size: int
    modified: float


@dataclass(frozen=True, slots=True)
class BlobLocation:
    """How to serve a blob: stream it through `read`, or redirect the client to `url`."""

    size: int
    url: str | None = None


class BlobStore(Protocol):
    async def stat(self, digest: Digest) -> BlobStat | None:
        """Size and modification time of the committed blob, or None when absent."""

    async def locate(self, digest: Digest) -> BlobLocation | None:
        """Where to read the blob from, or None when absent."""

    def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream the blob's bytes (for backends or callers that cannot use `locate`)."""

    def local_path(self, digest: Digest) -> Path | None:
        """The blob's file when the backend keeps blobs as local files (an export hard-links
        it instead of copying), else None (read it through `read`)."""

    async def delete(self, digest: Digest) -> bool:
        """Remove the blob; True when something was removed."""

    def walk(self) -> AsyncIterator[tuple[Digest, float]]:
        """Every committed blob with its modification time (for GC's orphan sweep)."""

    async def quarantine(self, digest: Digest) -> bool:
        """Move a blob whose bytes fail their digest out of the served namespace (kept aside
        for inspection, never served or walked again); True when something was moved.

        A later commit of the right bytes publishes the blob afresh.
        """


class UploadStore(Protocol):
    async def create_upload(self, upload_id: str) -> None:
        """Start an empty upload."""

    async def upload_size(self, upload_id: str) -> int | None:
        """Bytes received so far, or None when the upload does not exist."""

    async def append(
        self, upload_id: str, chunks: AsyncIterator[bytes], offset: int, limit: int
    ) -> int:
        """Append a stream at `offset` (must be the current size); returns the new size.

        On any failure the upload is cut back to `offset`, so a broken request loses nothing
        already accepted and leaves nothing half-written.
        """

    async def commit(self, upload_id: str, expected: Digest) -> int:
        """Verify the upload against `expected` and make it visible as that blob, atomically.

        Raises `DigestMismatch` (upload kept) when the bytes do not match.
        """

    async def truncate(self, upload_id: str, size: int) -> None:
        """Cut the upload back to `size` bytes (undo a final chunk whose digest was wrong)."""

    async def cancel(self, upload_id: str) -> None:
        """Discard the upload's bytes."""

    def uploads(self) -> AsyncIterator[tuple[str, float]]:
        """Every upload's id and last-modified time (for expiry of abandoned uploads)."""


class Storage(BlobStore, UploadStore, Protocol):
    """A backend provides both ports."""

    async def close(self) -> None:
        """Release connections (no-op for local files)."""
