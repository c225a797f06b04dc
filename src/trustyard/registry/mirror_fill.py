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
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from trustyard.oci.digest import Digest
from trustyard.registry.uploads import Uploads

if TYPE_CHECKING:  # the client brings httpx: imported only where mirrors are configured
    from trustyard.remote.upstream import UpstreamRegistry

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """At most one running task per key; callers of a running key share its result."""

    def __init__(self) -> None:
        self._running: dict[object, asyncio.Task[T]] = {}

    async def run(self, key: object, start: Callable[[], Awaitable[T]]) -> T:
        task, _ = self.start(key, start)
        return await asyncio.shield(task)

    def start(self, key: object, start: Callable[[], Awaitable[T]]) -> tuple[asyncio.Task[T], bool]:
        """The running task for `key`, or a new one; True when this call started it."""
        task = self._running.get(key)
        if task is not None:
            return task, False
        task = asyncio.ensure_future(start())
        self._running[key] = task
        task.add_done_callback(functools.partial(self._forget, key))
        return task, True

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


_DONE = object()
STALL_SECONDS = 30.0


class Tee:
    """A copy of a fill's bytes for the client that started it, as they arrive.

    The queue is small, so the fill runs at the pace of that client while it listens; once it
    hangs up (`detach`), the fill goes on alone at the upstream's pace. `opened` resolves when
    the upstream answered (with the length it declared, or None), or with False when the blob
    was already stored (mounted) and nothing will stream.
    """

    def __init__(self) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize=16)
        self.attached = True
        self.opened: asyncio.Future[int | bool | None] = asyncio.get_running_loop().create_future()

    async def put(self, item: object) -> None:
        """Hand a chunk to the client; one that has not taken any for `STALL_SECONDS` (gone
        without its response ever starting, or stuck) is dropped, and the fill goes on."""
        if not self.attached:
            return
        try:
            await asyncio.wait_for(self.queue.put(item), STALL_SECONDS)
        except TimeoutError:
            self.detach()

    def detach(self) -> None:
        self.attached = False
        while not self.queue.empty():  # wake a fill blocked on a full queue
            self.queue.get_nowait()

    def open(self, value: int | bool | None) -> None:
        if not self.opened.done():
            self.opened.set_result(value)

    def fail(self, exc: BaseException) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
            self.opened.exception()  # retrieved: the fill's own waiter reports it
        elif self.attached:
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(exc)

    async def body(self) -> AsyncIterator[bytes]:
        """The bytes for the response; an upstream failure mid-way breaks the response off."""
        try:
            while True:
                item = await self.queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            self.detach()


async def _teed(chunks: AsyncIterator[bytes], tee: Tee, held: list[bytes]) -> AsyncIterator[bytes]:
    """Copy each chunk to the client one chunk late: the last one is in `held` until the
    upload verified the digest, so a client never receives the whole of a wrong blob (the
    response declares its length: all bytes would look like a complete, good answer)."""
    async for chunk in chunks:
        if held:
            await tee.put(held.pop())
        held.append(chunk)
        yield chunk


async def fill_blob(
    uploads: Uploads,
    upstream: UpstreamRegistry,
    name: str,
    upstream_name: str,
    digest: Digest,
    size: int | None,
    tee: Tee | None = None,
) -> int:
    """Store blob `digest` into repository `name` from the upstream; returns its size.

    A blob the storage already holds (another repository pulled or pushed it) is mounted, once
    the upstream confirmed (HEAD) that it has it too: else anyone who may pull the mirror could
    read any repository's blob by asking for its digest here. `size` (from the manifest's
    descriptor) bounds the download exactly when known; `tee` gets a copy of the bytes as they
    arrive.
    """
    if await uploads.storage.stat(digest) is not None:
        await upstream.head_blob(upstream_name, str(digest))  # UpstreamNotFound: not there
    mounted = await uploads.mount(name, str(digest), None)
    if mounted is not None:
        if tee is not None:
            tee.open(False)
        return mounted[1]
    async with upstream.blob(upstream_name, str(digest)) as response:
        declared = response.headers.get("content-length", "")
        limit = size if size is not None else uploads.max_blob_bytes
        chunks: AsyncIterator[bytes] = upstream.chunks(response, limit)
        length = str(size) if size is not None else (declared if declared.isdigit() else None)
        held: list[bytes] = []
        if tee is not None:
            tee.open(int(length) if length else None)
            chunks = _teed(chunks, tee, held)
        _, stored = await uploads.monolithic(name, str(digest), chunks, length)
    if tee is not None:
        if held:
            await tee.put(held.pop())
        await tee.put(_DONE)
    return stored
