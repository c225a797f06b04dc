"""Append a request body to an upload file: the event loop receives and copies, two threads
hash and write (sha256 off the loop keeps other requests answered during a large push).

Writes bypass the page cache (`O_DIRECT`) where the filesystem allows it. Measured on the
benchmark VM (docs/benchmarks.md): buffered writes ran at ~300 MB/s because every new page-cache
page is a never-touched guest page the hypervisor must back first, while the disk itself takes
`O_DIRECT` writes at 1.4-2.6 GB/s. A registry writes each blob once and fsyncs it anyway, so the
page cache buys nothing on the way in. Direct I/O needs block-aligned offsets, lengths and
memory: bodies are copied into page-aligned buffers (the copy a batch buffer costs anyway), the
aligned middle of each buffer goes out direct and the unaligned ends (a chunk boundary that is
not block-aligned, the blob's tail) through the normal descriptor. Nothing here is specific to
a registry protocol; it is written by hand because no library streams an async body into
`O_DIRECT` writes.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import mmap
import os
from collections.abc import AsyncIterator
from concurrent.futures import Future, ThreadPoolExecutor

import structlog

from trustyard.oci.digest import Digester
from trustyard.storage.aligned import ALIGN, BufferPool, open_direct
from trustyard.storage.errors import SizeExceeded

log = structlog.get_logger("trustyard.storage")

# Bytes handed to the writer thread at once: large enough to amortise the thread hop.
BATCH = 1 << 20
# Buffers kept for reuse per process (aligned.py says why).
_POOL_MAX = 4
_POOL = BufferPool(BATCH, _POOL_MAX)


@functools.cache
def _threads() -> ThreadPoolExecutor:
    """Writer and hasher threads, started on first use (so after a server forks its workers).
    Our own pool rather than the loop's: a cancelled request must still be able to wait for
    the thread that is reading its buffer, which an asyncio future no longer tracks."""
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="trustyard-append")


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads (an inherited executor would queue
    work nobody runs) and may have inherited the pool's lock held: start both afresh."""
    global _POOL
    _POOL = BufferPool(BATCH, _POOL_MAX)
    _threads.cache_clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Appender:
    """Writes one request body at `position` of an open upload file.

    Buffer `i` holds file bytes starting at `start`, placed at buffer offset `start % ALIGN`,
    so that file offsets and buffer offsets agree modulo `ALIGN` and every block-aligned file
    range is a block-aligned buffer range.
    """

    def __init__(self, fd: int, position: int, *, direct_path: str | None) -> None:
        """`direct_path`: the file behind `fd`, to write direct; None writes through `fd` only."""
        self.fd = fd
        self.position = position  # file offset of the next byte to write
        self._direct_path = direct_path
        self.direct_fd: int | None = None
        self._direct_owned: int | None = None
        self._buffers: tuple[mmap.mmap, ...] = ()
        self._current = 0
        self._fill = position % ALIGN  # bytes of the current buffer in use (incl. lead-in)
        self._inflight: list[Future[None]] = []  # thread work on the other buffer
        self._digester: Digester | None = None

    async def feed(
        self, chunks: AsyncIterator[bytes], digester: Digester | None, limit: int
    ) -> int:
        """Hash and write every chunk; returns the file size after the last one."""
        self._digester = digester
        try:
            self._buffers = (_POOL.take(), _POOL.take())
            if self._direct_path is not None:
                self.direct_fd = self._direct_owned = open_direct(self._direct_path, os.O_WRONLY)
            async for chunk in chunks:
                if not chunk:
                    continue
                if limit and self.position + self._buffered() + len(chunk) > limit:
                    raise SizeExceeded(limit)
                await self._copy(memoryview(chunk))
            await self._flush()
            await self._wait()
            return self.position
        finally:
            await self._close()

    def _buffered(self) -> int:
        return self._fill - self.position % ALIGN

    async def _copy(self, view: memoryview) -> None:
        while view:
            buf = self._buffers[self._current]
            n = min(len(view), BATCH - self._fill)
            buf[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == BATCH:
                await self._flush()

    async def _flush(self) -> None:
        """Hand the current buffer to the threads; the next one must be free first."""
        lead = self.position % ALIGN
        if self._fill <= lead:
            return
        await self._wait()  # the other buffer's work is done: it may be refilled
        buf, start, end, at = self._buffers[self._current], lead, self._fill, self.position
        threads = _threads()
        self._inflight = [threads.submit(self._write, buf, start, end, at)]
        if self._digester is not None:
            # In order: the previous buffer's hash finished in `_wait` above.
            self._inflight.append(threads.submit(_hash, self._digester, buf, start, end))
        self.position += end - start
        self._current ^= 1
        self._fill = self.position % ALIGN

    async def _wait(self) -> None:
        """Until the thread work in flight is done; raises its error."""
        for future in self._inflight:
            await asyncio.wrap_future(future)
        self._inflight = []

    def _write(self, buf: mmap.mmap, start: int, end: int, at: int) -> None:
        """Worker thread: buffer bytes [start, end) go to file offset `at`."""
        view = memoryview(buf)
        try:
            lo = -(-start // ALIGN) * ALIGN  # first aligned offset
            hi = end // ALIGN * ALIGN  # last aligned offset
            if self.direct_fd is not None and lo < hi:
                _pwrite_all(self.fd, view[start:lo], at)
                try:
                    _pwrite_all(self.direct_fd, view[lo:hi], at + lo - start)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # Alignment the device refuses (a block size above ALIGN): the rest of
                    # this request goes through the page cache.
                    log.info("direct_io_refused", reason=str(exc))
                    self.direct_fd = None
                    _pwrite_all(self.fd, view[lo:hi], at + lo - start)
                _pwrite_all(self.fd, view[hi:end], at + hi - start)
            else:
                _pwrite_all(self.fd, view[start:end], at)
        finally:
            view.release()

    async def _close(self) -> None:
        """Wait out thread work still running, even when cancelled meanwhile (the caller
        truncates the file next, and the buffers go back to the pool), then release."""
        cancelled = False
        while pending := [f for f in self._inflight if not f.done()]:
            try:
                await asyncio.wait([asyncio.wrap_future(f) for f in pending])
            except asyncio.CancelledError:
                cancelled = True
        self._inflight = []
        for buf in self._buffers:
            _POOL.give(buf)
        self._buffers = ()
        if self._direct_owned is not None:
            os.close(self._direct_owned)
            self._direct_owned = self.direct_fd = None
        if cancelled:
            raise asyncio.CancelledError


def _pwrite_all(fd: int, data: memoryview, position: int) -> None:
    while data:
        n = os.pwrite(fd, data, position)
        data, position = data[n:], position + n


def _hash(digester: Digester, buf: mmap.mmap, start: int, end: int) -> None:
    with memoryview(buf) as view:
        digester.update(view[start:end])  # type: ignore[arg-type]
