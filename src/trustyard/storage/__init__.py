"""Blob storage: the `Storage` port (base.py) and its backends (filesystem.py, s3.py).

Only the ports are re-exported here; the backends are opened by `trustyard.wiring`.
"""

from trustyard.storage.base import BlobLocation, BlobStat, BlobStore, Storage, UploadStore

__all__ = ["BlobLocation", "BlobStat", "BlobStore", "Storage", "UploadStore"]
