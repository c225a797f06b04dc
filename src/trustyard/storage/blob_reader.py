"""Read one blob for one response: through the page cache when its bytes are cached or the
blob is hot, around it (`O_DIRECT`) when a cold blob's bytes are not cached.

Why, measured on the benchmark VM (docs/benchmarks.md): uploads are written around the page
cache (appender.py), so a blob's first pull finds none of it cached. Read through the page
cache, every 4 KiB then lands in a fresh guest page the hypervisor must back first: 350-500
MB/s for a 1 GiB blob just pushed, where direct reads into a reused buffer ran at 1.1-1.7
GB/s. The page cache still pays off for blobs pulled again and again (base layers): a blob
read a second time is read through it, so later pulls come from memory (the kernel's own
"second touch" rule for its active list). Written by hand: no library reads a file with
`O_DIRECT` and `RWF_NOWAIT`.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict

import structlog

from trustyard.storage.aligned import ALIGN, BufferPool, open_direct

log = structlog.get_logger("trustyard.storage")

# Idle read buffers kept per process (a buffer is held only while a direct read runs): enough
# for a few concurrent cold pulls without faulting in fresh pages per read, at most 8 MiB idle.
_POOL_KEEP = 4


class _Pools:
    """One buffer pool per chunk size, started afresh in a forked child (an inherited lock may
    be held by a thread the child does not have)."""

    def __init__(self) -> None:
        self._pools: dict[int, BufferPool] = {}
        self._lock = threading.Lock()

    def get(self, size: int) -> BufferPool:
        with self._lock:
            pool = self._pools.get(size)
            if pool is None:
                pool = self._pools[size] = BufferPool(size, _POOL_KEEP)
            return pool


_POOLS = _Pools()


def _after_fork_in_child() -> None:
    global _POOLS
    _POOLS = _Pools()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RecentBlobs:
    """The last `capacity` blobs read by this process (digest strings): a blob read again
    while still listed is hot."""

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def touch(self, key: str) -> bool:
        """Record a read of `key`; True when it was read before (and is still listed)."""
        with self._lock:
            hot = key in self._seen
            self._seen[key] = None
            self._seen.move_to_end(key)
            while len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
            return hot


class BlobReader:
    """Positional reads of one open blob, from worker threads (the caller's pattern: the next
    chunk is read while the previous one is sent; a second direct read in flight was no
    faster in the server, 994 vs 1,076 MB/s, one run each). `close` may come while a read
    runs (the client went away): the descriptors are released when it ends, so a descriptor
    number is not reused under it.

    `direct=True` reads chunks that are not in the page cache with `O_DIRECT`, each into a
    pooled aligned buffer held for that read only; `direct=False`, a filesystem that refuses
    `O_DIRECT`, or a kernel without `RWF_NOWAIT` read everything through the page cache, as
    plain `pread`s.
    """

    def __init__(self, path: str, *, chunk: int, direct: bool) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # FileNotFoundError: the caller's
        self.size = os.fstat(self.fd).st_size
        self._chunk = chunk
        self._direct_path = path if direct and hasattr(os, "RWF_NOWAIT") else None
        self._direct_fd: int | None = None
        self._buffer_pool: BufferPool | None = None
        self._probe = bytearray(1)
        self._lock = threading.Lock()
        self._busy = 0
        self._closed = False

    def read(self, n: int, position: int) -> bytes:
        """Up to `n` (at most `chunk`) bytes at `position`; b"" at the end or once closed.
        Blocking: call it on a worker thread."""
        with self._lock:
            if self._closed:
                return b""
            self._busy += 1
        try:
            if self._direct_path is not None and not self._cached(position, n):
                data = self._read_direct(n, position)
                if data is not None:
                    return data
            return os.pread(self.fd, n, position)
        finally:
            with self._lock:
                self._busy -= 1
                if self._closed and not self._busy:
                    self._release()

    def _cached(self, position: int, n: int) -> bool:
        """Whether the chunk's first and last bytes are in the page cache: an `RWF_NOWAIT`
        read takes only cached bytes and answers EAGAIN otherwise (it does start reading the
        page it asked for: 16 KiB per 2 MiB chunk, measured). The first byte alone is not
        enough: a pushed blob's unaligned tail was written through the cache (appender.py).
        A gap between the two is read through the cache, which is only slower, never wrong."""
        last = min(position + n, self.size) - 1
        if last < position:
            return True  # nothing left: pread answers b""
        try:
            os.preadv(self.fd, [self._probe], position, os.RWF_NOWAIT)
            os.preadv(self.fd, [self._probe], last, os.RWF_NOWAIT)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self._direct_path = None  # this kernel or filesystem has no RWF_NOWAIT
        return True

    def _read_direct(self, n: int, position: int) -> bytes | None:
        """The chunk read with `O_DIRECT`, or None when the filesystem refuses it (then this
        reader stays on the page cache)."""
        with self._lock:  # two reads may arrive here first at once: one descriptor
            path = self._direct_path
            if path is None:  # another read found direct I/O refused meanwhile
                return None
            if self._direct_fd is None:
                self._direct_fd = open_direct(path, os.O_RDONLY)
                if self._direct_fd is None:
                    self._direct_path = None
                    return None
                self._buffer_pool = _POOLS.get(self._chunk + 2 * ALIGN)
        assert self._buffer_pool is not None
        start = position // ALIGN * ALIGN
        lead = position - start
        want = -(-(lead + n) // ALIGN) * ALIGN
        buffer = self._buffer_pool.take()
        try:
            with memoryview(buffer) as view:
                got = os.preadv(self._direct_fd, [view[:want]], start)
            return buffer[lead : max(lead, min(got, lead + n))]
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            # Alignment the device refuses (a block size above ALIGN): page cache from here.
            log.info("direct_read_refused", reason=str(exc))
            self._direct_path = None
            return None
        finally:
            self._buffer_pool.give(buffer)

    def close(self) -> None:
        """Release both descriptors now, or when the last running read ends."""
        with self._lock:
            self._closed = True
            if not self._busy:
                self._release()

    def _release(self) -> None:
        """Called once, under the lock, with no read running."""
        os.close(self.fd)
        if self._direct_fd is not None:
            os.close(self._direct_fd)
            self._direct_fd = None
