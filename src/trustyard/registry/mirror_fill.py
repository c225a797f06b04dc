"""Filling the cache from an upstream: one blob or one manifest at a time, each fetched once.

`SingleFlight` runs one task per key in this process: a second request for the same blob or
manifest waits for the first fetch instead of starting its own, and a requester that goes away
(its client hung up, its task was cancelled) does not stop the fill, which runs on as its own
task (`asyncio.shield`). Across processes or replicas two fills of one blob may both run; the
storage's atomic commit makes that harmless.

Blobs go through the normal upload path (`Uploads.monolithic`): written to an upload, verified
against their digest, made visible by the commit, linked to the repository. A blob already held
by another repository is mounted instead (no upstream request at all).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from trustyard.oci.digest import Digest
from trustyard.registry.uploads import Uploads
from trustyard.remote.upstream import UpstreamRegistry

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running task per key; callers of a running key share its result."""

    def __init__(self) -> None:
        self._running: dict[object, asyncio.Task[T]] = {}

    async def run(self, key: object, start: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(start())
            self._running[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: object, task: asyncio.Task[T]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: a failed fill nobody waits for is not "never retrieved"

    def running(self, key: object) -> bool:
        return key in self._running

    async def wait_all(self) -> None:
        """Let running fills finish (shutdown)."""
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)


async def fill_blob(
    uploads: Uploads,
    upstream: UpstreamRegistry,
    name: str,
    upstream_name: str,
    digest: Digest,
    size: int | None,
) -> int:
    """Store blob `digest` into repository `name` from the upstream; returns its size.

    A blob the storage already holds (another repository pulled or pushed it) is mounted.
    `size` (from the manifest's descriptor) bounds the download exactly when known.
    """
    mounted = await uploads.mount(name, str(digest), None)
    if mounted is not None:
        return mounted[1]
    async with upstream.blob(upstream_name, str(digest)) as response:
        declared = response.headers.get("content-length", "")
        limit = size if size is not None else uploads.max_blob_bytes
        chunks: AsyncIterator[bytes] = upstream.chunks(response, limit)
        length = str(size) if size is not None else (declared if declared.isdigit() else None)
        _, stored = await uploads.monolithic(name, str(digest), chunks, length)
    return stored
