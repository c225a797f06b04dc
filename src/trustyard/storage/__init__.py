"""Blob storage backends behind the `Storage` Protocol; `open_storage` picks one from config."""

from __future__ import annotations

from pathlib import Path

from trustyard.storage.base import BlobLocation, BlobStat, BlobStore, Storage, UploadStore
from trustyard.storage.filesystem import FilesystemStorage
from trustyard.storage.s3 import S3Options, S3Storage

__all__ = [
    "BlobLocation",
    "BlobStat",
    "BlobStore",
    "S3Options",
    "Storage",
    "UploadStore",
    "open_storage",
]


def open_storage(
    root: Path, *, fsync: bool = True, direct_io: bool = True, s3: S3Options | None = None
) -> Storage:
    """S3-compatible object storage when `s3` is given, else blobs on the local filesystem."""
    if s3 is not None:
        return S3Storage(s3)
    return FilesystemStorage(root, fsync=fsync, direct_io=direct_io)
