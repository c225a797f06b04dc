"""Online garbage collection: safe while the server keeps accepting pushes.

Safety comes from three rules rather than a read-only window:
- mark and sweep of metadata happen in one write transaction, so no push interleaves;
- anything younger than the grace period is live (blobs uploaded for a manifest not yet pushed,
  children of an index still being pushed);
- a blob file is unlinked only if it is older than the grace period, so bytes that a concurrent
  push just renamed into place survive even when their metadata row was swept.

The marking rules are pure code (registry/gc_mark.py, the specification); the SQL backend runs
them inside that transaction as a recursive CTE (metadata/gc_sql.py), so only dead rows leave
the database (a contract test checks on random stores that both plan the same). Simple signatures of collected manifests are
pruned afterwards in their own transaction (their table belongs to the signature store); that is
still safe because a signature is only ever added while its manifest exists (checked in the
adding transaction), so "manifest gone and signature older than the cutoff" stays true once true
unless the manifest is re-pushed, and then the prune's NOT EXISTS sees it and keeps the row.

Before the CTE, marking read every row into memory. Size limit of that (benchmarks/gc_mark.py; synthetic store, 2 layers per manifest,
a tenth indexes, a third tagged, a third dead; 2 shared cores under load): 10k manifests take
~10 MiB of snapshot, 22 MiB peak and 0.3-0.5 s CPU; 100k ~100 MiB, 210 MiB peak, 3-6 s; 1M
~1 GiB, 2.2 GiB peak, ~70 s (about a third of it parsing the dead digests). Reading the rows
costs more than marking them: a whole dry-run pass on SQLite (`--sqlite`) took 3-6 s at 10k
manifests and 25-50 s at 100k (~750k rows), as did the code before marking moved out of SQL.
Pushes wait for the whole pass (exclusive lock), so the limit is that pause, not memory; hence
the CTE (figures in docs/benchmarks.md, "Scale").
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from trustyard.metadata.base import GcPlan, MetadataStore
from trustyard.oci.digest import Digest
from trustyard.storage.base import Storage


class OrphanSignatures(Protocol):
    """The part of the simple-signature store GC needs (metadata.signatures_sql)."""

    async def prune_orphans(self, cutoff: float) -> int:
        """Delete signatures older than `cutoff` whose manifest is gone; how many went."""


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
    signatures: OrphanSignatures | None = None,
    history_keep_seconds: float = 0,
) -> GcReport:
    """Remove unreferenced manifests, blob links and blobs, and expire abandoned uploads.

    `sweep_orphans` also removes blob files with no metadata row, left by a crash between
    publishing bytes and recording them (it walks the whole blob store). Digests a tag left
    within `history_keep_seconds` are kept (tag history: `trustyard tag restore` needs them).
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

    # mark=None: the backend runs gc_mark's rules where the rows are (SQL: a recursive CTE)
    report.plan = await metadata.collect(
        cutoff,
        mark=None,
        dry_run=dry_run,
        on_blob_deleted=sweep,
        history_since=now - history_keep_seconds,
    )
    if signatures is not None and not dry_run:
        # Simple signatures follow their manifest (kept during the grace period, as pushes).
        await signatures.prune_orphans(cutoff)
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
