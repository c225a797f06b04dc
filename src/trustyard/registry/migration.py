"""Move a registry between backends (files + SQLite → S3 + PostgreSQL), verifying every byte.

Blobs first (each streamed through an upload on the target, whose commit re-checks the digest),
then metadata. Resumable: blobs already in the target and rows already copied are skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol, Self

from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.oci.manifest import parse_manifest
from trustyard.storage.base import Storage
from trustyard.storage.errors import StorageError, StorageUnavailable


class Tables(Protocol):
    """What a migration needs of a metadata store beyond `MetadataStore`: whole tables.

    Implemented for the SQL stores by `metadata.copy.SqlTables`; the composition root hands
    one in for each side.
    """

    async def blob_digests(self) -> set[str]:
        """Every blob digest the metadata knows (text form)."""

    async def copy_to(self, target: Self) -> dict[str, int]:
        """Copy every row into `target` (rows already there are skipped); the source counts."""

    async def row_counts(self) -> dict[str, int]:
        """Rows per table."""

    def manifest_rows(self) -> AsyncIterator[tuple[str, bytes, str]]:
        """(digest, exact bytes, media type) of every stored manifest, streamed."""


@dataclass
class MigrationReport:
    blobs_copied: int = 0
    blobs_skipped: int = 0
    bytes_copied: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def migrate_registry(
    source_storage: Storage,
    source_meta: Tables,
    target_storage: Storage,
    target_meta: Tables,
    *,
    on_blob: Callable[[Digest, int], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> MigrationReport:
    report = MigrationReport()
    for digest_text in sorted(await source_meta.blob_digests()):
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
    if report.problems:
        # Metadata naming blobs the target lacks would be a broken registry: stop here.
        report.problems.append("metadata not copied: fix the blobs above, then run again")
        return report
    report.rows = await source_meta.copy_to(target_meta)
    copied = await target_meta.row_counts()
    for table, count in report.rows.items():
        if copied.get(table, 0) < count:
            report.problems.append(
                f"table {table}: {count} rows in the source, {copied.get(table, 0)} in the target"
            )
    for digest_text, content, media_type in [row async for row in target_meta.manifest_rows()]:
        digest = Digest.parse(digest_text)
        try:
            parsed = parse_manifest(content, media_type, digest.algorithm)
        except RegistryError as exc:
            report.problems.append(f"manifest {digest}: {exc.message}")
            continue
        if parsed.digest != digest:
            report.problems.append(f"manifest {digest} hashes to {parsed.digest} in the target")
    return report


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
