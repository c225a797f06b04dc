"""In-process cache: exact for one worker, and the fallback when Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from trustyard.cache.base import LockBusy


class MemoryCache:
    """`clock` drives the counters' windows (tests pass a fake one)."""

    def __init__(
        self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._values: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._counters: dict[str, tuple[float, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.max_entries = max_entries
        self._clock = clock

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
            self._counters.pop(key, None)

    async def incr(self, key: str, window_seconds: float) -> int:
        now = self._clock()
        expires, count = self._counter(key, now, window_seconds)
        self._counters[key] = (expires, count + 1)
        self._trim(now)
        return count + 1

    async def reserve(
        self, limits: Mapping[str, int], window_seconds: float
    ) -> tuple[str, float] | None:
        # No await in here: atomic for every task of this event loop.
        now = self._clock()
        current = {key: self._counter(key, now, window_seconds) for key in limits}
        for key, limit in limits.items():
            expires, count = current[key]
            if count >= limit:
                return key, expires - now
        for key, limit in limits.items():
            expires, count = current[key]
            if count + 1 >= limit:
                expires = now + window_seconds
            self._counters[key] = (expires, count + 1)
        self._trim(now)
        return None

    async def release(self, key: str) -> None:
        entry = self._counters.get(key)
        if entry is None:
            return
        if entry[1] <= 1:
            del self._counters[key]
        else:
            self._counters[key] = (entry[0], entry[1] - 1)

    def _counter(self, key: str, now: float, window_seconds: float) -> tuple[float, int]:
        expires, count = self._counters.get(key, (now + window_seconds, 0))
        if expires <= now:
            return now + window_seconds, 0
        return expires, count

    def _trim(self, now: float) -> None:
        if len(self._counters) > self.max_entries:
            for k in [k for k, (e, _) in self._counters.items() if e <= now]:
                del self._counters[k]

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
