"""One suite for the in-process cache and the Redis one, plus Redis outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from trustyard.cache.base import Cache, LockBusy
from trustyard.cache.memory import MemoryCache
from trustyard.cache.redis import RedisCache


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    c: Cache = (
        RedisCache(request.getfixturevalue("redis_server").url)
        if request.param == "redis"
        else MemoryCache()
    )
    yield c
    await c.close()


async def test_get_set_delete_ttl(cache: Cache) -> None:
    assert await cache.get("k") is None
    await cache.set("k", b"v", 10)
    assert await cache.get("k") == b"v"
    await cache.delete("k", "other")
    assert await cache.get("k") is None
    await cache.set("short", b"x", 0.05)
    await asyncio.sleep(0.15)
    assert await cache.get("short") is None


async def test_counters_reset_after_window(cache: Cache) -> None:
    assert [await cache.incr("c", 0.3) for _ in range(3)] == [1, 2, 3]
    await asyncio.sleep(0.5)
    assert await cache.incr("c", 0.3) == 1


async def test_lock_is_exclusive_and_released(cache: Cache) -> None:
    async with cache.lock("L", ttl_seconds=10):
        with pytest.raises(LockBusy):
            async with cache.lock("L", ttl_seconds=10):
                pass
        async with cache.lock("other", ttl_seconds=10):
            pass
    async with cache.lock("L", ttl_seconds=10):
        pass


async def test_lock_waits_for_holder(cache: Cache) -> None:
    order: list[str] = []

    async def holder() -> None:
        async with cache.lock("W", ttl_seconds=10):
            order.append("first")
            await asyncio.sleep(0.2)

    task = asyncio.create_task(holder())
    await asyncio.sleep(0.05)
    async with cache.lock("W", ttl_seconds=10, wait_seconds=5):
        order.append("second")
    await task
    assert order == ["first", "second"]


async def test_redis_lock_is_shared_between_clients(redis_server) -> None:
    a, b = RedisCache(redis_server.url), RedisCache(redis_server.url)
    async with a.lock("shared", ttl_seconds=10):
        with pytest.raises(LockBusy):
            async with b.lock("shared", ttl_seconds=10):
                pass
    await b.set("k", b"from b", 10)
    assert await a.get("k") == b"from b"
    await a.close()
    await b.close()


async def test_redis_outage_degrades_to_local(redis_server) -> None:
    now = [1000.0]
    c = RedisCache(redis_server.url, clock=lambda: now[0])  # the back-off runs on this clock
    await c.set("k", b"v", 10)
    redis_server.stop()
    assert await c.get("k") is None  # a miss, not an error
    await c.set("k", b"v", 10)
    assert await c.incr("n", 10) == 1
    async with c.lock("L", ttl_seconds=10):
        with pytest.raises(LockBusy):
            async with c.lock("L", ttl_seconds=10):
                pass
    redis_server.start()
    now[0] += 5.1  # the back-off after a failure
    await c.set("k", b"back", 10)
    assert await c.get("k") == b"back"
    await c.close()


async def test_reserve_counts_up_to_the_limit_under_concurrency(cache: Cache) -> None:
    """60 concurrent reservations against a limit of 5: exactly 5 are counted."""
    answers = await asyncio.gather(*(cache.reserve({"acct": 5, "ip": 100}, 10) for _ in range(60)))
    assert sum(a is None for a in answers) == 5
    refused = [a for a in answers if a is not None]
    assert {key for key, _ in refused} == {"acct"}
    assert all(0 < seconds <= 10 for _, seconds in refused)
    # A refused reservation counted nothing: "ip" took exactly the 5 that passed.
    assert await cache.reserve({"ip": 6}, 10) is None
    assert await cache.reserve({"ip": 6}, 10) == ("ip", pytest.approx(10, abs=0.5))


async def test_reserve_release_and_window(cache: Cache) -> None:
    assert await cache.reserve({"r": 2}, 0.4) is None
    await cache.release("r")
    await cache.release("r")  # never below zero
    await cache.release("never-reserved")
    assert await cache.reserve({"r": 2}, 0.4) is None
    assert await cache.reserve({"r": 2}, 0.4) is None
    full = await cache.reserve({"r": 2}, 0.4)
    assert full is not None and full[0] == "r"
    await cache.delete("r")  # forgetting a counter
    assert await cache.reserve({"r": 2}, 0.4) is None
    assert await cache.reserve({"r": 2}, 0.4) is None
    await asyncio.sleep(0.6)  # the window that started when the limit was reached ends
    assert await cache.reserve({"r": 2}, 0.4) is None


async def test_redis_reservations_are_shared_between_clients(redis_server) -> None:
    clients = [RedisCache(redis_server.url) for _ in range(3)]
    answers = await asyncio.gather(
        *(clients[i % 3].reserve({"login:account:alice": 5}, 30) for i in range(60))
    )
    assert sum(a is None for a in answers) == 5
    for c in clients:
        await c.close()


async def test_redis_reservations_fall_back_at_once_when_down(redis_server) -> None:
    """Callers queued behind a failed reservation use the in-process counters straight away."""
    c = RedisCache(redis_server.url)
    redis_server.stop()
    start = time.monotonic()
    answers = await asyncio.gather(*(c.reserve({"k": 5}, 30) for _ in range(60)))
    assert time.monotonic() - start < 3
    assert sum(a is None for a in answers) == 5  # still limited, per process
    redis_server.start()
    await c.close()
