"""Backup and restore of the embedded store: a metadata snapshot, its blobs, the data-dir keys.

A backup directory:

    backup.json                 format, time, schema revision, counts (written last: a backup
                                without it was interrupted and is refused by restore)
    metadata.db                 the metadata as of one instant (metadata/sqlite_backup.py)
    blobs/<alg>/<xx>/<hex>      every blob that snapshot knows, content addressed
    files/<name>/...            data-dir secrets: trust/passphrase, auth/token-signing/...

Blobs (those the snapshot's repositories link) are copied after the snapshot, so every one exists (a push commits bytes before
their metadata row). They are content addressed: backing up into the same directory again
copies only new blobs. Every copy is verified against its digest on the way, in both
directions; a restore writes blobs through the storage port, whose commit re-verifies them.
Only GC can remove a blob the snapshot names before it is copied (see docs/backup.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from trustyard.oci.digest import Digest, Digester
from trustyard.storage.base import BlobStore, UploadStore
from trustyard.storage.errors import DigestMismatch

FORMAT = 1
MANIFEST = "backup.json"
METADATA = "metadata.db"
BLOBS = "blobs"
FILES = "files"
# Data-dir entries holding secrets a restored server needs (trust passphrase, token keys).
PRIVATE_DIRS = ("trust", "auth")
_CHUNK = 1 << 20

OnBytes = Callable[[int], None]


@dataclass(slots=True)
class BlobCopyReport:
    copied: int = 0
    present: int = 0  # already in the destination with the right size
    bytes_copied: int = 0
    missing: list[Digest] = field(default_factory=list)  # named by the snapshot, no bytes
    corrupt: list[Digest] = field(default_factory=list)  # bytes do not match their digest

    @property
    def ok(self) -> bool:
        return not (self.missing or self.corrupt)


def blob_path(root: Path, digest: Digest) -> Path:
    return root / BLOBS / digest.algorithm / digest.hex[:2] / digest.hex


def is_reusable_target(dest: Path) -> bool:
    """An empty or absent directory, or one holding only what a backup writes."""
    if not dest.exists():
        return True
    if not dest.is_dir():
        return False
    ours = {MANIFEST, METADATA, BLOBS, FILES}
    return all(p.name in ours or p.name.startswith(".") for p in dest.iterdir())


async def backup_blobs(
    storage: BlobStore,
    blobs: Iterable[tuple[Digest, int]],
    dest: Path,
    on_bytes: OnBytes | None = None,
) -> BlobCopyReport:
    """Copy each blob from the store to `dest/blobs`, digest-verified, skipping ones present."""
    report = BlobCopyReport()
    for digest, size in blobs:
        target = blob_path(dest, digest)
        with contextlib.suppress(FileNotFoundError):
            if target.stat().st_size == size:
                report.present += 1
                if on_bytes is not None:
                    on_bytes(size)
                continue
        if await storage.stat(digest) is None:
            report.missing.append(digest)
            continue
        written = await _write_verified(storage.read(digest), digest, target, on_bytes)
        if written is None:
            report.corrupt.append(digest)
        else:
            report.copied += 1
            report.bytes_copied += written
    return report


async def _write_verified(
    chunks: AsyncIterator[bytes], digest: Digest, target: Path, on_bytes: OnBytes | None
) -> int | None:
    """Stream into a temp file beside `target`, then rename; None (nothing kept) on mismatch."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    digester = Digester(digest.algorithm)
    try:
        async with await anyio.open_file(tmp, "wb") as f:
            async for chunk in chunks:
                digester.update(chunk)
                await f.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            if digester.digest() != digest:
                return None
            await f.flush()
            await anyio.to_thread.run_sync(os.fsync, f.wrapped.fileno())
        os.replace(tmp, target)
        return digester.size
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


async def restore_blobs(
    source: Path,
    blobs: Iterable[tuple[Digest, int]],
    storage: UploadStore,
    on_bytes: OnBytes | None = None,
) -> BlobCopyReport:
    """Upload each backed-up blob into the target store; its commit verifies the digest."""
    report = BlobCopyReport()
    for digest, _size in blobs:
        path = blob_path(source, digest)
        if not path.is_file():
            report.missing.append(digest)
            continue
        upload_id = uuid.uuid4().hex
        await storage.create_upload(upload_id)
        try:
            size = await storage.append(upload_id, _file_chunks(path, on_bytes), 0, 0)
            await storage.commit(upload_id, digest)
        except DigestMismatch:
            report.corrupt.append(digest)
            continue
        finally:
            await storage.cancel(upload_id)
        report.copied += 1
        report.bytes_copied += size
    return report


async def _file_chunks(path: Path, on_bytes: OnBytes | None) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        while chunk := await f.read(_CHUNK):
            if on_bytes is not None:
                on_bytes(len(chunk))
            yield chunk


def copy_private_files(source_dir: Path, target_dir: Path) -> list[str]:
    """Copy the secret-holding entries of `source_dir` (PRIVATE_DIRS) into `target_dir`:
    directories 0700, files 0600 whatever they were. Returns the relative paths copied."""
    copied: list[str] = []
    target_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in PRIVATE_DIRS:
        root = source_dir / name
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            relative = path.relative_to(source_dir)
            target = target_dir / relative
            for parent in reversed(target.relative_to(target_dir).parents[:-1]):
                (target_dir / parent).mkdir(mode=0o700, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
            copied.append(str(relative))
    return copied


def write_manifest(dest: Path, info: dict[str, Any]) -> None:
    """backup.json, aside then renamed: its presence says the backup completed."""
    body = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    body.update(info)
    tmp = dest / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, dest / MANIFEST)


def read_manifest(source: Path) -> dict[str, Any]:
    """The backup's backup.json; ValueError when absent (interrupted) or not ours."""
    try:
        body = json.loads((source / MANIFEST).read_text())
    except FileNotFoundError:
        raise ValueError(
            f"{source} is not a complete trustyard backup (no {MANIFEST}; an interrupted "
            "backup never writes it)"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{source / MANIFEST} is unreadable: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"{source / MANIFEST} is not a format {FORMAT} trustyard backup")
    return body
