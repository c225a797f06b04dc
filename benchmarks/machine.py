"""Machine limits measured in the same run: sha256 speed, sequential disk write (fsync) and read.

The disk is written two ways, each to new files: through the page cache (write + fsync) and
around it (`O_DIRECT` + fsync). On the benchmark VM the first measures the hypervisor backing
never-touched guest pages (~300 MB/s) more than the disk (1.4-2.0 GB/s direct); the disk's
limit is the faster of the two, since a server is free to choose either (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import socket
import subprocess
import threading
import time

from benchmarks.context import Context

_CHUNK = 4 << 20
SHA256 = "sha256, one core"
DISK_WRITE_BUFFERED = "disk write, sequential + fsync"
DISK_WRITE_DIRECT = "disk write, sequential O_DIRECT + fsync"
LOOPBACK_SHA256 = "loopback receive + sha256, native (splice to openssl)"


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


def disk_write_direct_mbps(path: str, data: bytes, total: int) -> float | None:
    """Write `total` bytes to a new file with `O_DIRECT` from a page-aligned buffer, and fsync;
    None where the filesystem refuses direct I/O. Left for the caller to delete, as above."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    except OSError:
        return None
    with mmap.mmap(-1, _CHUNK) as buf:
        buf.write(data[:_CHUNK])
        started = time.perf_counter()
        try:
            done = 0
            while done < total:  # total is a multiple of _CHUNK in both modes
                done += os.pwrite(fd, buf, done)
            os.fsync(fd)
        finally:
            os.close(fd)
    return total / (time.perf_counter() - started) / 1e6


def loopback_sha256_mbps(path: str, total: int) -> float | None:
    """Native ceiling for receiving a body over loopback and hashing it, with the sender on
    the same cores (as in every push here): `sendfile` into a TCP socket, `splice` out of it
    into `openssl dgst -sha256`. No Python touches the bytes; None without openssl."""
    if shutil.which("openssl") is None:
        return None
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def send() -> None:
            with socket.create_connection(("127.0.0.1", port)) as c, open(path, "rb") as f:
                c.sendfile(f, 0, total)

        sender = threading.Thread(target=send)
        digest = subprocess.Popen(
            ["openssl", "dgst", "-sha256"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        assert digest.stdin is not None
        sender.start()
        conn, _ = server.accept()
        started = time.perf_counter()
        with conn:
            while os.splice(conn.fileno(), digest.stdin.fileno(), 1 << 20):
                pass
        digest.stdin.close()
        digest.wait()
        elapsed = time.perf_counter() - started
        sender.join()
    return total / elapsed / 1e6


def run(ctx: Context) -> None:
    data = os.urandom(_CHUNK * 4)
    total = ctx.mode.blob_bytes
    probes = [ctx.workdir / f"disk-probe-{rep}.bin" for rep in range(ctx.mode.repeats)]
    probes += [ctx.workdir / f"disk-probe-direct-{rep}.bin" for rep in range(ctx.mode.repeats)]
    machine = ctx.results.machine
    try:
        for rep in range(ctx.mode.repeats):
            machine.setdefault(SHA256, []).append(sha256_mbps(data, max(total, 256 << 20)))
            write, read = disk_write_read_mbps(str(probes[rep]), data, total)
            machine.setdefault(DISK_WRITE_BUFFERED, []).append(write)
            direct = disk_write_direct_mbps(str(probes[ctx.mode.repeats + rep]), data, total)
            if direct is not None:
                machine.setdefault(DISK_WRITE_DIRECT, []).append(direct)
            machine.setdefault("disk read, sequential (cache dropped)", []).append(read)
            # The buffered probe file was just read back, so it is in the page cache.
            native = loopback_sha256_mbps(str(probes[rep]), total)
            if native is not None:
                machine.setdefault(LOOPBACK_SHA256, []).append(native)
    finally:
        for probe in probes:
            probe.unlink(missing_ok=True)
