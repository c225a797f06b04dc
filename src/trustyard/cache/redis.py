"""Redis-backed cache shared by replicas; falls back to in-process behaviour while Redis is down.

Locks are `SET key token NX PX ttl` released by a compare-and-delete script (the single-instance
pattern from the Redis docs); a crashed holder's lock expires after its TTL. Reservations
(`reserve`) are one Lua script, so concurrent callers on every replica see each other's counts.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from trustyard.cache.base import LockBusy
from trustyard.cache.memory import MemoryCache

log = structlog.get_logger("trustyard.cache")

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# KEYS: counters; ARGV[1]: window in ms; ARGV[1 + i]: the limit of KEYS[i]. Returns 0 when
# every counter took one more, else {i, ms until KEYS[i] resets} and nothing is counted.
_RESERVE = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('get', key) or '0') >= tonumber(ARGV[i + 1]) then
    return {i, redis.call('pttl', key)}
  end
end
for i, key in ipairs(KEYS) do
  local count = redis.call('incr', key)
  if count >= tonumber(ARGV[i + 1]) or redis.call('pttl', key) < 0 then
    redis.call('pexpire', key, ARGV[1])
  end
end
return 0
"""
_RELEASE_ONE = """
if redis.call('decr', KEYS[1]) <= 0 then redis.call('del', KEYS[1]) end
return 0
"""
# After a failure, skip Redis for this long instead of paying a timeout on every request.
RETRY_AFTER_SECONDS = 5.0


class RedisCache:
    """`retry_after`: seconds Redis is skipped after a failure, on `clock` (tests pass a fake
    clock rather than sleeping through the back-off)."""

    def __init__(
        self,
        url: str,
        prefix: str = "trustyard:",
        *,
        retry_after: float = RETRY_AFTER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = aioredis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._prefix = prefix
        self._retry_after = retry_after
        self._clock = clock
        self._fallback = MemoryCache()
        self._down_until = 0.0
        # Reservations (login attempts) take turns on one connection: a burst of concurrent
        # logins would otherwise open a connection each, and on a busy machine some of those
        # connects time out and fall back to the in-process counters, which do not see the
        # other workers' attempts. One script call takes well under a millisecond.
        self._reserve_turn = asyncio.Lock()

    def _up(self) -> bool:
        return self._clock() >= self._down_until

    def _failed(self, exc: Exception) -> None:
        if self._up():
            log.warning(
                "redis_unavailable", error=str(exc)[:200], retry_in_seconds=self._retry_after
            )
        self._down_until = self._clock() + self._retry_after

    async def get(self, key: str) -> bytes | None:
        if not self._up():
            return None
        try:
            value = await self._redis.get(self._prefix + key)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return None
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl_seconds: float) -> None:
        if not self._up():
            return
        try:
            await self._redis.set(self._prefix + key, value, px=max(int(ttl_seconds * 1000), 1))
        except (RedisError, OSError) as exc:
            self._failed(exc)

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        try:
            await self._redis.delete(*(self._prefix + k for k in keys))
        except (RedisError, OSError) as exc:
            # A stale entry could outlive this failure: entries carry short TTLs for that reason.
            self._failed(exc)

    async def incr(self, key: str, window_seconds: float) -> int:
        if self._up():
            try:
                pipe = self._redis.pipeline()
                pipe.incr(self._prefix + key)
                pipe.pexpire(self._prefix + key, max(int(window_seconds * 1000), 1), nx=True)
                count, _ = await pipe.execute()
                return int(count)
            except (RedisError, OSError) as exc:
                self._failed(exc)
        return await self._fallback.incr(key, window_seconds)

    async def reserve(
        self, limits: Mapping[str, int], window_seconds: float
    ) -> tuple[str, float] | None:
        keys = list(limits)
        window = max(int(window_seconds * 1000), 1)
        async with self._reserve_turn:
            # Checked after the wait: callers queued behind a failure do not each time out.
            if self._up():
                try:
                    answer = await self._redis.eval(
                        _RESERVE,
                        len(keys),
                        *(self._prefix + k for k in keys),
                        window,
                        *(limits[k] for k in keys),
                    )
                except (RedisError, OSError) as exc:
                    self._failed(exc)
                else:
                    if not isinstance(answer, list):
                        return None
                    index, ms = int(answer[0]), int(answer[1])
                    return keys[index - 1], (ms if ms > 0 else window) / 1000
        return await self._fallback.reserve(limits, window_seconds)

    async def release(self, key: str) -> None:
        if self._up():
            try:
                await self._redis.eval(_RELEASE_ONE, 1, self._prefix + key)
                return
            except (RedisError, OSError) as exc:
                self._failed(exc)
        await self._fallback.release(key)

    @asynccontextmanager
    async def lock(
        self, name: str, ttl_seconds: float, wait_seconds: float = 0
    ) -> AsyncIterator[None]:
        if not self._up():
            async with self._fallback.lock(name, ttl_seconds, wait_seconds):
                yield
            return
        key, token = self._prefix + "lock:" + name, secrets.token_hex(16)
        deadline = time.monotonic() + wait_seconds
        try:
            while not await self._redis.set(
                key, token, nx=True, px=max(int(ttl_seconds * 1000), 1)
            ):
                if time.monotonic() >= deadline:
                    raise LockBusy(name)
                await asyncio.sleep(0.05)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            async with self._fallback.lock(name, ttl_seconds, wait_seconds):
                yield
            return
        try:
            yield
        finally:
            try:
                await self._redis.eval(_RELEASE, 1, key, token)
            except (RedisError, OSError) as exc:
                self._failed(exc)

    async def close(self) -> None:
        await self._redis.aclose()
