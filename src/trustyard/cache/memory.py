"""In-process cache: exact for one worker, and the fallback when Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trustyard.cache.base import LockBusy


class MemoryCache:
    def __init__(self, max_entries: int = 10_000) -> None:
        self._values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._counters: dict[str, tuple[float, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.max_entries = max_entries

    async def get(self, key: str) -> bytes | None:
        entry = self._values.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._values.pop(key, None)
            return None
        self._values.move_to_end(key)
        return entry[1]

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        self._values[key] = (time.monotonic() + ttl_seconds, value)
        self._values.move_to_end(key)
        while len(self._values) > self.max_entries:
            self._values.popitem(last=False)

    async def delete(self, *keys: str) -> None:
        for key in keys:
            self._values.pop(key, None)

    async def incr(self, key: str, window_seconds: float) -> int:
        now = time.monotonic()
        expires, count = self._counters.get(key, (now + window_seconds, 0))
        if expires < now:
            expires, count = now + window_seconds, 0
        self._counters[key] = (expires, count + 1)
        if len(self._counters) > self.max_entries:
            for k in [k for k, (e, _) in self._counters.items() if e < now]:
                del self._counters[k]
        return count + 1

    @asynccontextmanager
    async def lock(
        self, name: str, ttl_seconds: float, wait_seconds: float = 0
    ) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        try:
            await asyncio.wait_for(lock.acquire(), timeout=wait_seconds or 0.001)
        except TimeoutError:
            raise LockBusy(name) from None
        try:
            yield
        finally:
            lock.release()
            if not lock.locked():
                self._locks.pop(name, None)

    async def close(self) -> None:
        self._values.clear()
