"""Settings + open services -> one online GC pass: what `trustyard gc`, the server's GC timer and
the web UI's preview all run, so the three cannot drift apart in what they keep."""

from __future__ import annotations

from trustyard.config import Settings
from trustyard.registry.gc import GcReport, collect_garbage
from trustyard.wiring.services import Services


async def run_gc(
    settings: Settings, services: Services, *, dry_run: bool, sweep_orphans: bool = True
) -> GcReport:
    """One pass with the settings' grace period, upload expiry and tag-history window. The
    caller takes the cache's `gc` lock where passes must not overlap (the CLI, the timer);
    `sweep_orphans=False` skips the walk of the blob store (the UI's quick preview)."""
    registry = services.registry
    assert registry is not None
    return await collect_garbage(
        registry.storage,
        registry.metadata,
        grace_seconds=settings.gc_grace_seconds,
        upload_max_age_seconds=settings.upload_max_age_seconds,
        dry_run=dry_run,
        sweep_orphans=sweep_orphans,
        changed=registry.changed,
        signatures=services.database.signatures,
        history_keep_seconds=settings.lifecycle.history_keep_days * 86400,
    )
