"""Scrub: re-read stored blobs and manifests, check every digest and every reference.

Bytes flipped on disk would otherwise be served silently (the reference registry does the same).
A blob whose bytes no longer match its digest is quarantined: moved out of the served
namespace by the storage port and unlinked from every repository in the metadata, so a GET or
HEAD answers 404 BLOB_UNKNOWN (never wrong bytes) and a client's next push uploads the right
bytes again, which heals it. Manifests live in the metadata; a corrupt one is reported.

Only the ports are used (`Storage`, `MetadataStore`), so the same scrub runs on files and S3,
SQLite and PostgreSQL, beside live traffic: blobs stream through the hash in chunks, paced by a
token bucket. Every stored manifest is re-read, tagged or not (a client may pull any of them by
digest until GC removes it), with its index children and referrers.

A push of the right bytes between our read and the quarantine would have its fresh copy moved
aside too; the blob then reads as missing and the client's next push uploads it again.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from trustyard.metadata.base import ManifestRecord, MetadataStore
from trustyard.oci.digest import Digest, Digester
from trustyard.oci.errors import RegistryError
from trustyard.oci.manifest import Manifest, content_digest, parse_manifest
from trustyard.oci.platforms import ALL_PLATFORMS, IndexPlatforms
from trustyard.storage.base import Storage
from trustyard.storage.errors import BlobNotFound

MB = 1_000_000
_PAGE = 1000


class TokenBucket:
    """Paces a byte stream to `rate` bytes per second (0: unlimited).

    The bucket holds up to one second of tokens, so a pause (a slow read) does not turn into
    a burst larger than that. A request larger than the bucket goes into debt and waits it
    off, so any chunk size works.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0")
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._tokens = rate
        self._last = clock()

    async def take(self, n: int) -> None:
        if self.rate == 0:
            return
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0:
            await self._sleep(-self._tokens / self.rate)


@dataclass(frozen=True, slots=True)
class CorruptBlob:
    digest: Digest
    actual: Digest
    size: int
    quarantined: bool
    unlinked_from: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CorruptManifest:
    repository: str
    digest: Digest
    reason: str


@dataclass(frozen=True, slots=True)
class MissingReference:
    repository: str
    manifest: Digest
    digest: Digest
    kind: str  # "blob", "blob content" (linked, but no bytes in storage) or "manifest"


@dataclass(slots=True)
class ScrubReport:
    repositories: int = 0
    manifests_checked: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    corrupt_blobs: list[CorruptBlob] = field(default_factory=list)
    corrupt_manifests: list[CorruptManifest] = field(default_factory=list)
    missing: list[MissingReference] = field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.corrupt_blobs or self.corrupt_manifests or self.missing)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "repositories": self.repositories,
            "manifests_checked": self.manifests_checked,
            "blobs_checked": self.blobs_checked,
            "bytes_checked": self.bytes_checked,
            "duration_seconds": round(self.duration_seconds, 3),
            "corrupt_blobs": [
                {
                    "digest": str(b.digest),
                    "actual": str(b.actual),
                    "size": b.size,
                    "quarantined": b.quarantined,
                    "unlinked_from": list(b.unlinked_from),
                }
                for b in self.corrupt_blobs
            ],
            "corrupt_manifests": [
                {"repository": m.repository, "digest": str(m.digest), "reason": m.reason}
                for m in self.corrupt_manifests
            ],
            "missing": [
                {
                    "repository": m.repository,
                    "manifest": str(m.manifest),
                    "digest": str(m.digest),
                    "kind": m.kind,
                }
                for m in self.missing
            ],
        }


class ScrubProgress(Protocol):
    """What a progress bar needs; every method is called from the scrub's own task."""

    def planned(self, blobs: int, total_bytes: int) -> None: ...

    def advanced(self, nbytes: int) -> None: ...

    def blob_done(self, digest: Digest) -> None: ...


@dataclass(frozen=True, slots=True)
class ScrubOptions:
    repository: str | None = None  # fnmatch glob on repository names; None: everything
    rate: float = 0.0  # bytes per second; 0: unlimited
    index_platforms: IndexPlatforms = ALL_PLATFORMS  # which index children must exist
    # Mirrored prefixes (`[[mirrors]]`): their blobs and index children are fetched from the
    # upstream when a client asks, so one not stored yet is not missing.
    mirrored: tuple[str, ...] = ()

    def on_demand(self, repository: str) -> bool:
        return any(repository == p or repository.startswith(p + "/") for p in self.mirrored)


async def scrub(
    storage: Storage,
    metadata: MetadataStore,
    options: ScrubOptions = ScrubOptions(),
    progress: ScrubProgress | None = None,
) -> ScrubReport:
    """Check manifests and their references, then every blob's bytes; quarantine bad blobs."""
    started = time.monotonic()
    report = ScrubReport()
    repositories = [r async for r in _repositories(metadata)]
    selected = [
        r
        for r in repositories
        if options.repository is None or fnmatch.fnmatchcase(r, options.repository)
    ]
    report.repositories = len(selected)
    # digest -> (repository, manifest) pairs whose manifests reference it
    referenced: dict[Digest, list[tuple[str, Digest]]] = {}
    for name in selected:
        await _check_repository(metadata, name, options, report, referenced)
    if options.repository is None:
        candidates = set(referenced) | {d async for d, _ in storage.walk()}
    else:
        candidates = set(referenced)
    sizes: dict[Digest, int] = {}
    for digest in sorted(candidates, key=str):
        st = await storage.stat(digest)
        if st is not None:
            sizes[digest] = st.size
        else:
            await _missing_content(metadata, report, digest, referenced)
    if progress is not None:
        progress.planned(len(sizes), sum(sizes.values()))
    bucket = TokenBucket(options.rate)
    for digest in sizes:
        actual = await _hash_blob(storage, digest, bucket, progress)
        if actual is None:  # deleted by GC meanwhile
            await _missing_content(metadata, report, digest, referenced)
        else:
            report.blobs_checked += 1
            report.bytes_checked += actual.size
            if actual.digest() != digest:
                report.corrupt_blobs.append(
                    await _quarantine(storage, metadata, repositories, digest, actual)
                )
        if progress is not None:
            progress.blob_done(digest)
    report.duration_seconds = time.monotonic() - started
    return report


async def _repositories(metadata: MetadataStore) -> AsyncIterator[str]:
    last: str | None = None
    while page := await metadata.list_repositories(_PAGE, last):
        for name in page:
            yield name
        last = page[-1]
        if len(page) < _PAGE:
            return


async def _manifests(metadata: MetadataStore, name: str) -> AsyncIterator[str]:
    last: str | None = None
    while page := await metadata.list_manifests(name, _PAGE, last):
        for digest in page:
            yield digest
        last = page[-1]
        if len(page) < _PAGE:
            return


async def _check_repository(
    metadata: MetadataStore,
    name: str,
    options: ScrubOptions,
    report: ScrubReport,
    referenced: dict[Digest, list[tuple[str, Digest]]],
) -> None:
    """Every manifest of the repository, tagged or not: digest, parse and references."""
    queue: list[ManifestRecord] = []
    async for digest in _manifests(metadata, name):
        record = await metadata.get_manifest(name, Digest.parse(digest))
        if record is not None:
            queue.append(record)
    seen: set[Digest] = set()
    while queue:
        record = queue.pop()
        if record.digest in seen:
            continue
        seen.add(record.digest)
        report.manifests_checked += 1
        manifest = _verify_manifest(record, report)
        if manifest is None:
            continue
        on_demand = options.on_demand(name)
        for blob in manifest.blobs:
            linked = await metadata.blob_size(name, blob.digest) is not None
            if not linked and on_demand:
                continue
            referenced.setdefault(blob.digest, []).append((name, record.digest))
            if not linked:
                report.missing.append(MissingReference(name, record.digest, blob.digest, "blob"))
        for child in manifest.children:
            found = await metadata.get_manifest(name, child.digest)
            if found is not None:
                queue.append(found)
            elif not on_demand and options.index_platforms.must_exist(child.platform):
                report.missing.append(
                    MissingReference(name, record.digest, child.digest, "manifest")
                )
        for referrer in await metadata.referrers(name, record.digest, None):
            found = await metadata.get_manifest(name, referrer.digest)
            if found is not None:
                queue.append(found)


def _verify_manifest(record: ManifestRecord, report: ScrubReport) -> Manifest | None:
    """The parsed manifest, or None (and a report entry) when its stored bytes are wrong."""
    try:
        # schema 1 manifests are named by their signed payload's digest, not their bytes'
        actual = content_digest(record.content, record.media_type, record.digest.algorithm)
        if actual != record.digest:
            reason = f"stored bytes have digest {actual}"
        else:
            return parse_manifest(
                record.content, record.media_type, record.digest.algorithm, schema1_ok=True
            )
    except RegistryError as exc:
        reason = f"stored bytes do not parse: {exc.message}"
    report.corrupt_manifests.append(CorruptManifest(record.repository, record.digest, reason))
    return None


async def _missing_content(
    metadata: MetadataStore,
    report: ScrubReport,
    digest: Digest,
    referenced: dict[Digest, list[tuple[str, Digest]]],
) -> None:
    """Report a referenced blob without bytes, unless its link is already reported missing or
    the manifest is gone by now (GC swept both while we were reading)."""
    unlinked = {(m.repository, m.manifest) for m in report.missing if m.digest == digest}
    for name, manifest in referenced.get(digest, []):
        if (name, manifest) in unlinked or await metadata.get_manifest(name, manifest) is None:
            continue
        report.missing.append(MissingReference(name, manifest, digest, "blob content"))


async def _hash_blob(
    storage: Storage, digest: Digest, bucket: TokenBucket, progress: ScrubProgress | None
) -> Digester | None:
    """Stream the blob through its hash algorithm; None when it vanished meanwhile."""
    digester = Digester(digest.algorithm)
    try:
        async for chunk in storage.read(digest):
            digester.update(chunk)
            if progress is not None:
                progress.advanced(len(chunk))
            await bucket.take(len(chunk))
    except BlobNotFound:
        return None
    except Exception:
        if await storage.stat(digest) is None:  # S3: a key deleted between stat and read
            return None
        raise
    return digester


async def _quarantine(
    storage: Storage,
    metadata: MetadataStore,
    repositories: list[str],
    digest: Digest,
    actual: Digester,
) -> CorruptBlob:
    """Bytes aside first, then the links: a HEAD must not say 200 for bytes we no longer
    serve, or a client would skip uploading the right ones."""
    moved = await storage.quarantine(digest)
    unlinked = []
    for name in repositories:
        if await metadata.blob_size(name, digest) is not None:
            await metadata.unlink_blob(name, digest)
            unlinked.append(name)
    return CorruptBlob(digest, actual.digest(), actual.size, moved, tuple(unlinked))
