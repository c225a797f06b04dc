"""Metadata ports: repositories, manifests, tags, blob links and upload sessions.

Small Protocols grouped by concern; one backend class (SQL) implements them all. Records are plain
frozen dataclasses so the registry use cases never see SQL types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from trustyard.metadata.events_base import OutboxEntry
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import Descriptor, Manifest


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    repository: str
    digest: Digest
    media_type: str
    size: int
    content: bytes
    subject: Digest | None = None
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class UploadRecord:
    upload_id: str
    repository: str
    started_at: float


@dataclass(slots=True)
class GcPlan:
    """What a GC pass removes; computed and applied in one metadata transaction."""

    manifests: list[tuple[str, Digest]] = field(default_factory=list)
    links: list[tuple[str, Digest]] = field(default_factory=list)
    blobs: list[tuple[Digest, int]] = field(default_factory=list)
    # (repository, tag): cosign attachment tags whose subject is gone
    tags: list[tuple[str, str]] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(size for _, size in self.blobs)


# The rows GC marks from, as plain values (digests stay text: parsing every one is costly).
class GcManifest(NamedTuple):
    repository: str
    digest: str
    subject: str | None
    touched_at: float  # the last push of these bytes; the grace period counts from here


class GcRef(NamedTuple):
    repository: str
    parent: str
    child: str
    kind: str  # "blob" (config, layers) or "manifest" (index children)


class GcTag(NamedTuple):
    repository: str
    name: str
    digest: str


class GcLink(NamedTuple):
    repository: str
    digest: str
    linked_at: float


class GcHistory(NamedTuple):
    repository: str
    digest: str  # a digest a tag pointed at before it moved (or was deleted)
    moved_at: float  # the last such move


class GcBlob(NamedTuple):
    digest: str
    size: int
    last_seen: float


@dataclass(frozen=True, slots=True)
class GcSnapshot:
    """Every row GC marks from, read inside its exclusive write transaction."""

    manifests: list[GcManifest]
    refs: list[GcRef]
    tags: list[GcTag]
    links: list[GcLink]
    blobs: list[GcBlob]
    # Earlier tag targets (tag history): kept for a window, so `trustyard tag restore` works.
    history: list[GcHistory] = field(default_factory=list)


# The marking rules (registry/gc_mark.py): what to remove, given the rows and the cutoff.
GcMarker = Callable[[GcSnapshot, float], GcPlan]

# Deletes a blob's bytes unless they are newer than the cutoff; True when deleted.
BlobSweeper = Callable[[Digest, float], Awaitable[bool]]


class BlobIndex(Protocol):
    async def link_blob(
        self,
        repository: str,
        digest: Digest,
        size: int,
        finished_upload: str | None = None,
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> None:
        """Record that `repository` holds blob `digest` (creating the repository), and drop
        the session row of the upload that produced it, in the same transaction (with
        `events`, the outbox rows reporting it)."""

    async def mount_blob(
        self,
        repository: str,
        digest: Digest,
        source: str | None,
        *,
        events: Callable[[int], Sequence[OutboxEntry]] | None = None,
    ) -> int | None:
        """Link an existing blob from `source` (or from anywhere when None); its size, or None.
        `events(size)` gives the outbox rows, written only when the mount happens."""

    async def blob_size(self, repository: str, digest: Digest) -> int | None:
        """Size of the blob when `repository` holds it."""

    async def unlink_blob(
        self, repository: str, digest: Digest, *, events: Sequence[OutboxEntry] = ()
    ) -> bool:
        """Remove the blob from `repository` (GC reclaims the bytes later); the outbox rows
        `events` are written in the same transaction, only when a link was removed."""


class ManifestIndex(Protocol):
    async def put_manifest(
        self,
        repository: str,
        manifest: Manifest,
        content: bytes,
        tags: list[str],
        *,
        optional_children: frozenset[Digest] = frozenset(),
        events: Sequence[OutboxEntry] | Callable[[dict[str, str]], Sequence[OutboxEntry]] = (),
        actor: str | None = None,
        optional_blobs: frozenset[Digest] = frozenset(),
    ) -> dict[str, str]:
        """Store manifest bytes and tags atomically, with the outbox rows `events`; raises when
        a referenced item is unknown. Returns where the tags pointed before (tag -> digest, for
        the tags that existed); `events` may be a function of that, called in the transaction,
        so a `tag-moved` event names the digest the write really moved the tag from.

        Children of an index in `optional_children` may be missing (indexes.platforms). Every
        tag that moves is recorded in the tag history (with `actor`) in the same transaction.
        Blobs in `optional_blobs` may be missing too: a mirrored manifest is stored before its
        blobs, which are fetched from the upstream when a client asks for them (registry/mirror).
        """

    async def get_manifest(self, repository: str, reference: str | Digest) -> ManifestRecord | None:
        """Look a manifest up by tag or digest."""

    async def delete_manifest(
        self,
        repository: str,
        digest: Digest,
        actor: str | None = None,
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Delete a manifest and every tag pointing at it (recorded in the tag history;
        `events` written when found)."""

    async def delete_tag(
        self,
        repository: str,
        tag: str,
        actor: str | None = None,
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Delete one tag, leaving its manifest for GC (recorded in the tag history; `events`
        written when found)."""

    async def referrers(
        self, repository: str, subject: Digest, artifact_type: str | None
    ) -> list[Descriptor]:
        """Descriptors of manifests whose subject is `subject`."""


class CatalogIndex(Protocol):
    async def repository_exists(self, repository: str) -> bool: ...

    async def list_tags(self, repository: str, limit: int, last: str | None) -> list[str]:
        """Up to `limit` tags after `last`, lexically ordered."""

    async def list_repositories(self, limit: int, last: str | None) -> list[str]:
        """Up to `limit` repositories holding manifests, after `last`, lexically ordered."""

    async def list_manifests(self, repository: str, limit: int, last: str | None) -> list[str]:
        """Up to `limit` digests of the repository's manifests (tagged or not) after `last`,
        lexically ordered: what a scrub re-reads."""


class UploadIndex(Protocol):
    async def create_upload(self, upload_id: str, repository: str) -> None: ...

    async def get_upload(self, upload_id: str) -> UploadRecord | None: ...

    async def delete_upload(self, upload_id: str) -> None: ...

    async def list_uploads(self) -> list[UploadRecord]: ...


class GcIndex(Protocol):
    async def collect(
        self,
        cutoff: float,
        *,
        mark: GcMarker | None,
        dry_run: bool,
        on_blob_deleted: BlobSweeper,
        history_since: float | None = None,
    ) -> GcPlan:
        """Under a lock excluding every writer, plan and (unless `dry_run`) apply the plan, all
        in one transaction; returns the plan. `mark` plans from a GcSnapshot read into memory;
        None lets the backend apply registry/gc_mark.py's rules itself (SQL: a recursive CTE),
        keeping tag-history targets moved off at or after `history_since`."""

    async def blob_digests(self) -> set[str]:
        """Every blob digest the metadata knows (for the orphan-file sweep)."""


class MetadataStore(BlobIndex, ManifestIndex, CatalogIndex, UploadIndex, GcIndex, Protocol):
    """Everything the registry keeps besides blob bytes."""

    async def close(self) -> None: ...
