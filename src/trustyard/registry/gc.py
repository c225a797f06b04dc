"""Online garbage collection: safe while the server keeps accepting pushes.

Safety comes from three rules rather than a read-only window:
- mark and sweep of metadata happen in one write transaction, so no push interleaves;
- anything younger than the grace period is live (blobs uploaded for a manifest not yet pushed,
  children of an index still being pushed);
- a blob file is unlinked only if it is older than the grace period, so bytes that a concurrent
  push just renamed into place survive even when their metadata row was swept.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from trustyard.metadata.base import GcPlan, MetadataStore
from trustyard.oci.digest import Digest
from trustyard.storage.base import Storage


@dataclass(slots=True)
class GcReport:
    plan: GcPlan
    dry_run: bool
    expired_uploads: list[str] = field(default_factory=list)
    orphan_files: list[Digest] = field(default_factory=list)
    blobs_kept_as_fresh: list[Digest] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return self.plan.freed_bytes


async def collect_garbage(
    storage: Storage,
    metadata: MetadataStore,
    *,
    grace_seconds: float,
    upload_max_age_seconds: float,
    dry_run: bool = False,
    sweep_orphans: bool = True,
    changed: Callable[[str], Awaitable[None]] | None = None,
) -> GcReport:
    """Remove unreferenced manifests, blob links and blobs, and expire abandoned uploads.

    `sweep_orphans` also removes blob files with no metadata row, left by a crash between
    publishing bytes and recording them (it walks the whole blob store).
    """
    now = time.time()
    cutoff = now - grace_seconds
    report = GcReport(plan=GcPlan(), dry_run=dry_run)

    async def sweep(digest: Digest, limit: float) -> bool:
        st = await storage.stat(digest)
        if st is None:
            return False
        if st.modified >= limit:
            report.blobs_kept_as_fresh.append(digest)
            return False
        return await storage.delete(digest)

    report.plan = await metadata.collect(cutoff, dry_run=dry_run, on_blob_deleted=sweep)
    if changed is not None and not dry_run:
        for repository in sorted({name for name, _ in report.plan.manifests}):
            await changed(repository)  # cached lookups of collected manifests are void
    report.expired_uploads = await expire_uploads(
        storage, metadata, upload_max_age_seconds, dry_run=dry_run
    )
    if sweep_orphans:
        known_blobs = await metadata.blob_digests()
        async for digest, modified in storage.walk():
            if str(digest) not in known_blobs and modified < cutoff:
                report.orphan_files.append(digest)
                if not dry_run:
                    await storage.delete(digest)
    return report


async def expire_uploads(
    storage: Storage, metadata: MetadataStore, max_age_seconds: float, *, dry_run: bool = False
) -> list[str]:
    """Drop uploads idle for longer than `max_age_seconds` (bytes and session row)."""
    cutoff = time.time() - max_age_seconds
    expired: list[str] = []
    on_disk: dict[str, float] = {}
    async for upload_id, modified in storage.uploads():
        on_disk[upload_id] = modified
        if modified < cutoff:
            expired.append(upload_id)
    for record in await metadata.list_uploads():
        if record.upload_id not in on_disk and record.started_at < cutoff:
            expired.append(record.upload_id)  # a row whose bytes never arrived (crash)
    if not dry_run:
        for upload_id in expired:
            await storage.cancel(upload_id)
            await metadata.delete_upload(upload_id)
    return expired
