"""The cache port: byte values with a time to live, named locks, windowed counters."""

from __future__ import annotations

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

    def lock(
        self, name: str, ttl_seconds: float, wait_seconds: float = 0
    ) -> AbstractAsyncContextManager[None]:
        """Hold `name` exclusively (raises LockBusy after `wait_seconds`); expires after `ttl_seconds`."""

    async def close(self) -> None: ...
