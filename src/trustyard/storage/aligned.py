"""Page-aligned buffers for direct I/O (`O_DIRECT`), shared by the upload writer and the blob
reader. Direct I/O needs block-aligned offsets, lengths and memory; anonymous mappings are
page-aligned, and keeping a few per process avoids faulting in fresh pages on every request
(the cost direct I/O is there to avoid on the benchmark VM, docs/benchmarks.md)."""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import threading

# Offsets, lengths and buffer addresses of direct I/O are multiples of this (the largest
# logical block size in common use; a 512-byte device accepts it too).
ALIGN = 4096
O_DIRECT: int = getattr(os, "O_DIRECT", 0)


class BufferPool:
    """Reusable page-aligned buffers of one size, at most `keep` of them idle."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return mmap.mmap(-1, self.size)

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buf)
                return
        # A failed I/O's traceback may still hold a view of it: then the collector frees it.
        with contextlib.suppress(BufferError):
            buf.close()


def open_direct(path: str, flags: int) -> int | None:
    """An `O_DIRECT` descriptor on `path`, or None where the filesystem refuses it (tmpfs,
    some FUSE and network filesystems)."""
    if not O_DIRECT:
        return None
    try:
        return os.open(path, flags | os.O_CLOEXEC | O_DIRECT)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise
