"""The cache port: byte values with a time to live, named locks, windowed counters; and the
per-repository generation stamps that keep cached lookups exact (`cache.generations`)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Protocol


class LockBusy(Exception):
    """Someone else holds the lock."""


class Cache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None: ...

    async def delete(self, *keys: str) -> None: ...

    async def incr(self, key: str, window_seconds: float) -> int:
        """Add one to a counter that resets `window_seconds` after its first increment."""

    async def reserve(
        self, limits: Mapping[str, int], window_seconds: float
    ) -> tuple[str, float] | None:
        """Atomically add one to each counter in `limits` unless one is at its limit already.

        None when counted. Otherwise nothing is counted and the answer is the counter at its
        limit and the seconds until it resets. A counter resets `window_seconds` after its
        first reservation, or after the one that brought it to its limit (a full window).
        """

    async def release(self, key: str) -> None:
        """Take back one reservation of `key` (a counter never goes below zero)."""

    def lock(
        self, name: str, ttl_seconds: float, wait_seconds: float = 0
    ) -> AbstractAsyncContextManager[None]:
        """Hold `name` exclusively (raises LockBusy after `wait_seconds`); expires after `ttl_seconds`."""

    async def close(self) -> None: ...


class Generations(Protocol):
    """Per-repository stamps: a cached answer is valid only while its repository's stamp holds."""

    async def read(self, repository: str) -> int: ...

    async def bump(self, repository: str) -> None: ...
