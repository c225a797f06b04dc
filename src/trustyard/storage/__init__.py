"""Blob storage backends behind the `Storage` Protocol; `open_storage` picks one from config."""

from __future__ import annotations

from pathlib import Path

from trustyard.storage.base import BlobLocation, BlobStat, BlobStore, Storage, UploadStore
from trustyard.storage.filesystem import FilesystemStorage

__all__ = ["BlobLocation", "BlobStat", "BlobStore", "Storage", "UploadStore", "open_storage"]


def open_storage(root: Path, *, fsync: bool = True) -> Storage:
    """The embedded default: blobs on the local filesystem."""
    return FilesystemStorage(root, fsync=fsync)
