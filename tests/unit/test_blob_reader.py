"""Blob reads around the page cache for cold blobs (storage/blob_reader.py), on a real
filesystem: exact bytes at unaligned ranges, the page cache left alone on a cold read and used
on a hot one, the fallbacks, and a close that arrives while a read runs."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.oci.digest import Digest
from trustyard.storage import blob_reader
from trustyard.storage.blob_reader import BlobReader, RecentBlobs
from trustyard.storage.filesystem import FilesystemStorage

MiB = 1024 * 1024
CHUNK = 2 * MiB


_libc = ctypes.CDLL(None, use_errno=True)


def cached(path: Path, offset: int) -> bool:
    """Whether the page holding `offset` is in the page cache, by `mincore(2)` on a mapping of
    the file (a test oracle that reads nothing; an `RWF_NOWAIT` probe would read the page in)."""
    page = mmap.PAGESIZE
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) as m:
        vec = (ctypes.c_ubyte * 1)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(m)) + offset // page * page
        if _libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(page), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore")
        return bool(vec[0] & 1)


def uncached_file(path: Path, data: bytes) -> Path:
    """`data` in a file whose pages are not cached (written, fsynced, then dropped)."""
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    return path


@pytest.fixture
def cold(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(3).randbytes(5 * MiB + 12345)
    path = uncached_file(tmp_path / "blob", data)
    if cached(path, len(data) // 2):
        pytest.fail("the page cache kept a dropped file: this filesystem cannot test cold reads")
    return path, data


def read_all(reader: BlobReader, offset: int, length: int) -> bytes:
    out, position, end = [], offset, offset + length
    while position < end:
        chunk = reader.read(min(CHUNK, end - position), position)
        if not chunk:
            break
        out.append(chunk)
        position += len(chunk)
    return b"".join(out)


def test_cold_reads_are_exact_and_leave_the_page_cache_alone(cold: tuple[Path, bytes]) -> None:
    path, data = cold
    rng = random.Random(5)
    ranges = [(0, len(data)), (1, 4095), (4095, 2), (CHUNK - 1, CHUNK + 2), (len(data) - 7, 7)]
    ranges += [(o, rng.randrange(1, len(data) - o)) for o in rng.sample(range(len(data)), 20)]
    reader = BlobReader(str(path), chunk=CHUNK, direct=True)
    try:
        for offset, length in ranges:
            assert read_all(reader, offset, length) == data[offset : offset + length]
        assert read_all(reader, len(data), 10) == b""  # past the end: nothing, no error
        assert reader.read(CHUNK, len(data) - 3) == data[-3:]  # a short tail
    finally:
        reader.close()

    # A whole read went around the cache: only the page each chunk's probe asks for (its first)
    # may be cached (the kernel reads 16 KiB for it); a buffered read would have cached them all.
    uncached_file(path, data)
    reader = BlobReader(str(path), chunk=CHUNK, direct=True)
    assert read_all(reader, 0, len(data)) == data
    reader.close()
    assert not any(cached(path, o) for o in (64 * 1024, MiB, 3 * MiB, 5 * MiB, len(data) - 1))


def test_direct_false_and_cached_chunks_read_through_the_page_cache(
    cold: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = cold
    reader = BlobReader(str(path), chunk=CHUNK, direct=False)
    assert read_all(reader, 0, len(data)) == data
    reader.close()
    assert cached(path, len(data) - 1)  # through the cache: now cached
    opened: list[str] = []
    monkeypatch.setattr(blob_reader, "open_direct", lambda p, f: opened.append(p))
    reader = BlobReader(str(path), chunk=CHUNK, direct=True)
    assert read_all(reader, 0, len(data)) == data
    reader.close()
    assert opened == []  # every chunk was cached: no O_DIRECT descriptor


def test_a_filesystem_without_direct_io_falls_back(
    cold: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, data = cold
    monkeypatch.setattr(blob_reader, "open_direct", lambda p, f: None)
    reader = BlobReader(str(path), chunk=CHUNK, direct=True)
    assert read_all(reader, 3, len(data) - 3) == data[3:]
    reader.close()


def test_close_during_a_read_waits_for_it_before_releasing(
    cold: tuple[Path, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client went away while a read ran on its thread: neither the descriptor nor the read's
    buffer may be released under it (another response would read into that buffer)."""
    path, data = cold
    reader = BlobReader(str(path), chunk=CHUNK, direct=True)
    assert reader.read(CHUNK, 0) == data[:CHUNK]  # a buffer taken and given back
    pool = blob_reader._POOLS.get(CHUNK + 2 * 4096)
    idle = len(pool._free)
    assert idle >= 1
    entered, release = threading.Event(), threading.Event()
    real_pread = os.preadv

    def slow_preadv(fd: int, buffers: list[bytearray], offset: int, *flags: int) -> int:
        if not flags:  # the direct read, not the cache probe
            entered.set()
            release.wait(10)
        return real_pread(fd, buffers, offset, *flags)

    monkeypatch.setattr(os, "preadv", slow_preadv)
    result: list[bytes] = []
    worker = threading.Thread(target=lambda: result.append(reader.read(CHUNK, CHUNK)))
    worker.start()
    assert entered.wait(10)
    reader.close()
    os.fstat(reader.fd)  # still open: the read holds it
    assert len(pool._free) == idle - 1  # and its buffer
    release.set()
    worker.join(10)
    assert result == [data[CHUNK : 2 * CHUNK]]
    with pytest.raises(OSError):
        os.fstat(reader.fd)
    assert len(pool._free) == idle
    assert reader.read(CHUNK, 0) == b""  # a read queued after close reads nothing


def test_recent_blobs_forgets_the_oldest() -> None:
    recent = RecentBlobs(capacity=2)
    assert [recent.touch(k) for k in ("a", "b", "a", "c", "b", "a")] == [
        False, False, True, False, False, False,
    ]  # fmt: skip


async def pushed(store: FilesystemStorage, data: bytes, upload: str) -> Digest:
    """`data` stored as a blob through an upload, as a push does (written around the cache)."""

    async def body() -> AsyncIterator[bytes]:
        yield data

    await store.create_upload(upload)
    await store.append(upload, body(), offset=0, limit=0)
    digest = Digest.of(data)
    await store.commit(upload, digest)
    return digest


async def test_storage_reads_a_pushed_blob_cold_then_hot(tmp_path: Path) -> None:
    """First read of a blob pushed around the page cache stays around it; the second read
    (hot) fills the cache, so later reads come from memory."""
    store = FilesystemStorage(tmp_path, fsync=True)
    data = random.Random(9).randbytes(3 * MiB + 1)
    digest = await pushed(store, data, "e" * 32)
    path = store.blob_path(digest)
    assert not cached(path, MiB)  # pushed around the cache (its unaligned tail is cached)
    assert b"".join([c async for c in store.read(digest)]) == data
    assert not cached(path, MiB)
    assert b"".join([c async for c in store.read(digest, 7, 5)]) == data[7:12]
    assert b"".join([c async for c in store.read(digest)]) == data
    assert cached(path, MiB) and cached(path, 3 * MiB - 1)


async def test_a_client_gone_midway_leaks_no_descriptor(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path, fsync=False)
    digest = await pushed(store, os.urandom(9 * MiB), "f" * 32)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        stream = store.read(digest)
        assert await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)  # reads still on their threads end and release
    assert len(os.listdir("/proc/self/fd")) == before


async def test_cold_ranges_through_the_storage(tmp_path: Path) -> None:
    """Each read by a fresh storage (so the blob is cold: direct reads) returns exactly the
    asked range, whatever its alignment."""
    data = random.Random(11).randbytes(7 * MiB + 333)
    digest = await pushed(FilesystemStorage(tmp_path, fsync=False), data, "a" * 32)
    rng = random.Random(12)
    ranges = [(0, None), (1, CHUNK), (CHUNK - 1, 2 * CHUNK + 3), (len(data) - 1, 1)]
    ranges += [(o, rng.randrange(1, len(data) - o)) for o in rng.sample(range(len(data)), 8)]
    for offset, length in ranges:
        fresh = FilesystemStorage(tmp_path, fsync=False)
        got = b"".join([c async for c in fresh.read(digest, offset, length)])
        assert got == data[offset : None if length is None else offset + length]
