"""Settings -> blob storage, the shared cache and the manifest lookup cache."""

from __future__ import annotations

from trustyard.cache.base import Cache
from trustyard.cache.generations import CacheGenerations, FileGenerations
from trustyard.cache.memory import MemoryCache
from trustyard.config import Settings
from trustyard.registry.lookups import ManifestLookups
from trustyard.storage.base import Storage
from trustyard.storage.filesystem import FilesystemStorage
from trustyard.storage.s3 import S3Storage


def open_storage(settings: Settings) -> Storage:
    """S3-compatible object storage when configured, else blobs on the local filesystem."""
    if settings.storage_backend == "s3" and settings.s3 is not None:
        return S3Storage(settings.s3)
    return FilesystemStorage(
        settings.storage_dir, fsync=settings.fsync, direct_io=settings.direct_io
    )


def open_cache(redis_url: str | None) -> Cache:
    """Redis, shared between replicas (degrading to in-process while unreachable), or an
    in-process cache (one server, one worker's view)."""
    if redis_url:
        from trustyard.cache.redis import RedisCache

        return RedisCache(redis_url)
    return MemoryCache()


def manifest_lookups(settings: Settings, cache: Cache) -> ManifestLookups | None:
    """A lookup cache only where it can be exact: Redis-shared stamps, or one machine's file."""
    if settings.redis_url:
        return ManifestLookups(cache, CacheGenerations(cache))
    if settings.database_url is None:
        return ManifestLookups(cache, FileGenerations(settings.data_dir / "cache-generations"))
    return None
