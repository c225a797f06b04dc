"""Machine limits measured in the same run: sha256 speed, sequential disk write (fsync) and read."""

from __future__ import annotations

import hashlib
import os
import time

from benchmarks.context import Context

_CHUNK = 4 << 20


def sha256_mbps(data: bytes, total: int) -> float:
    view = memoryview(data)
    h = hashlib.sha256()
    started = time.perf_counter()
    done = 0
    while done < total:
        n = min(len(view), total - done)
        h.update(view[:n])
        done += n
    h.hexdigest()
    return total / (time.perf_counter() - started) / 1e6


def disk_write_read_mbps(path: str, data: bytes, total: int) -> tuple[float, float]:
    """Write `total` bytes to a new file and fsync (as a registry must before a blob is
    visible), then drop the file from the page cache and read it back. The file is left for
    the caller to delete after the last repetition: rewriting blocks just freed is much faster
    on a VM disk than the fresh blocks a registry writes to, and would overstate the limit."""
    view = memoryview(data)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        done = 0
        while done < total:
            n = min(_CHUNK, total - done, len(view))
            done += os.write(fd, view[:n])
        os.fsync(fd)
    finally:
        os.close(fd)
    write = total / (time.perf_counter() - started) / 1e6
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        buf = bytearray(_CHUNK)
        started = time.perf_counter()
        while os.readv(fd, [buf]):
            pass
        read = total / (time.perf_counter() - started) / 1e6
    finally:
        os.close(fd)
    return write, read


def run(ctx: Context) -> None:
    data = os.urandom(_CHUNK * 4)
    total = ctx.mode.blob_bytes
    probes = [ctx.workdir / f"disk-probe-{rep}.bin" for rep in range(ctx.mode.repeats)]
    try:
        for probe in probes:
            ctx.results.machine.setdefault("sha256, one core", []).append(
                sha256_mbps(data, max(total, 256 << 20))
            )
            write, read = disk_write_read_mbps(str(probe), data, total)
            ctx.results.machine.setdefault("disk write, sequential + fsync", []).append(write)
            ctx.results.machine.setdefault("disk read, sequential (cache dropped)", []).append(read)
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)
