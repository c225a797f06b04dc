"""Move a registry between backends (files + SQLite → S3 + PostgreSQL), verifying every byte.

The target may already hold a registry: the metadata is merged by natural keys. Conflicts (a tag
on both sides with different digests, a GUN with a different trust history) are found first and
refused before anything is written, unless `overwrite_tags` takes the source's tags. Then blobs
(each streamed through an upload on the target, whose commit re-checks the digest), then
metadata, then a verification that every source tag resolves to the same digest on the target.
Resumable and idempotent: what is already there is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from trustyard.metadata.copy_base import Tables, Tally
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.oci.manifest import parse_manifest
from trustyard.storage.base import Storage
from trustyard.storage.errors import StorageError, StorageUnavailable


@dataclass
class MigrationReport:
    blobs_copied: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0
    rows: dict[str, Tally] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def migrate_registry(
    source_storage: Storage,
    source_meta: Tables,
    target_storage: Storage,
    target_meta: Tables,
    *,
    overwrite_tags: bool = False,
    on_blob: Callable[[Digest, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> MigrationReport:
    """Conflicts first (refused before anything is written), then blobs, metadata, verification."""
    report = MigrationReport()
    report.conflicts = await source_meta.conflicts(target_meta, overwrite_tags=overwrite_tags)
    if report.conflicts:
        return report
    digests = sorted(await source_meta.blob_digests())
    await _copy_blobs(source_storage, target_storage, digests, report, on_blob, on_bytes)
    if report.problems:
        # Metadata naming blobs the target lacks would be a broken registry: stop here.
        report.problems.append("metadata not copied: fix the blobs above, then run again")
        return report
    copied = await source_meta.copy_to(target_meta, overwrite_tags=overwrite_tags)
    report.rows, report.notes = copied.tallies, copied.notes
    report.problems.extend(copied.problems)
    report.problems.extend(await source_meta.verify(target_meta))
    for digest_text in digests:
        if await target_storage.stat(Digest.parse(digest_text)) is None:
            report.problems.append(f"blob {digest_text} is missing from the target storage")
    async for digest_text, content, media_type in target_meta.manifest_rows():
        digest = Digest.parse(digest_text)
        try:
            parsed = parse_manifest(content, media_type, digest.algorithm, schema1_ok=True)
        except RegistryError as exc:
            report.problems.append(f"manifest {digest}: {exc.message}")
            continue
        if parsed.digest != digest:
            report.problems.append(f"manifest {digest} hashes to {parsed.digest} in the target")
    return report


async def _copy_blobs(
    source_storage: Storage,
    target_storage: Storage,
    digests: list[str],
    report: MigrationReport,
    on_blob: Callable[[Digest, int], None] | None,
    on_bytes: Callable[[int], None] | None,
) -> None:
    for digest_text in digests:
        digest = Digest.parse(digest_text)
        source = await source_storage.stat(digest)
        if source is None:
            report.problems.append(f"blob {digest} is in the metadata but its bytes are missing")
            continue
        existing = await target_storage.stat(digest)
        if existing is not None and existing.size == source.size:
            report.blobs_skipped += 1
            if on_bytes is not None:
                on_bytes(source.size)
        else:
            try:
                await _copy_blob(source_storage, target_storage, digest, on_bytes)
            except StorageUnavailable:
                raise
            except (RegistryError, StorageError) as exc:
                report.problems.append(f"blob {digest}: {exc.message}")
                continue
            report.blobs_copied += 1
            report.bytes_copied += source.size
        if on_blob is not None:
            on_blob(digest, source.size)


async def _copy_blob(
    source: Storage, target: Storage, digest: Digest, on_bytes: Callable[[int], None] | None
) -> None:
    upload_id = uuid.uuid4().hex

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in source.read(digest):
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk

    await target.create_upload(upload_id)
    try:
        await target.append(upload_id, chunks(), offset=0, limit=0)
        await target.commit(upload_id, digest)  # re-hashes: a corrupt source blob stops here
    except BaseException:
        await target.cancel(upload_id)
        raise
