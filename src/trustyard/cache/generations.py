"""Per-repository generation stamps: cached lookups are valid only while their stamp holds.

A write to a repository's manifests or tags stamps it anew; a reader takes the stamp before it
queries and stores it with the cached answer, so an answer computed before a write can never be
served after it. `FileGenerations` shares stamps between the worker processes of one machine
through a small memory-mapped file; `CacheGenerations` shares them between replicas via Redis.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
import zlib
from pathlib import Path

from trustyard.cache.base import Cache, Generations

_SLOTS = 4096
_SLOT = struct.Struct("<Q")

__all__ = ["CacheGenerations", "FileGenerations", "Generations"]


class FileGenerations:
    """Stamps in `path` (32 KiB), one 8-byte slot per hash bucket of repository names."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SLOTS * _SLOT.size:
                os.ftruncate(fd, _SLOTS * _SLOT.size)
            self._map = mmap.mmap(fd, _SLOTS * _SLOT.size)
        finally:
            os.close(fd)

    @staticmethod
    def _offset(repository: str) -> int:
        return (zlib.crc32(repository.encode()) % _SLOTS) * _SLOT.size

    async def read(self, repository: str) -> int:
        return int(_SLOT.unpack_from(self._map, self._offset(repository))[0])

    async def bump(self, repository: str) -> None:
        # Any new value invalidates; an aligned 8-byte store is not torn on the platforms we run.
        _SLOT.pack_into(self._map, self._offset(repository), time.time_ns())


class CacheGenerations:
    """Stamps kept in the shared cache (Redis) so every replica sees every write."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def read(self, repository: str) -> int:
        raw = await self._cache.get(f"gen:{repository}")
        return int(raw) if raw else 0

    async def bump(self, repository: str) -> None:
        await self._cache.set(f"gen:{repository}", str(time.time_ns()).encode(), 30 * 86400)
