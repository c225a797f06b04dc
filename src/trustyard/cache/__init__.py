"""What replicas share at run time: a lookup cache, short locks and counters.

`open_cache(None)` gives an in-process implementation (one server, one worker's view);
`open_cache("redis://…")` shares it between replicas and degrades to the in-process one,
slower but correct, while Redis is unreachable.
"""

from __future__ import annotations

from trustyard.cache.base import Cache, LockBusy
from trustyard.cache.memory import MemoryCache

__all__ = ["Cache", "LockBusy", "MemoryCache", "open_cache"]


def open_cache(redis_url: str | None) -> Cache:
    if redis_url:
        from trustyard.cache.redis import RedisCache

        return RedisCache(redis_url)
    return MemoryCache()
