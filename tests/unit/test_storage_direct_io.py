"""Upload appends written around the page cache (storage/appender.py), on a real filesystem.

The alignment rules of O_DIRECT are where such code breaks: bodies that start or end inside a
block, chunks that straddle the writer's buffers, several uploads sharing the buffer pool, and
a device that refuses a direct write halfway through.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.config import load_settings
from trustyard.oci.digest import Digest
from trustyard.storage import appender
from trustyard.storage.aligned import BufferPool
from trustyard.storage.errors import SizeExceeded
from trustyard.storage.filesystem import FilesystemStorage
from trustyard.wiring import open_services

MiB = 1024 * 1024


async def pieces(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    """`data` cut at the given sizes (the rest in one piece), as a request body arrives."""
    at = 0
    for n in sizes:
        yield data[at : at + n]
        at += n
    if at < len(data):
        yield data[at:]


def test_the_test_filesystem_takes_direct_io(tmp_path: Path) -> None:
    """Otherwise every test below would only exercise the buffered fallback."""
    probe = tmp_path / "probe"
    probe.touch()
    fd = appender.open_direct(str(probe), os.O_RDONLY)
    assert fd is not None
    os.close(fd)


@pytest.mark.parametrize(
    "requests",
    [
        # (body size, piece sizes within the body)
        [(1, []), (4095, [7]), (4097, [4096]), (MiB + 3, [MiB - 1, 5])],
        [(3 * MiB + 17, [100, MiB, 2 * MiB])],  # buffers filled across piece boundaries
        [(4096, []), (2 * MiB, [MiB]), (12_345, [1, 1, 1])],  # aligned, then not
        [(5 * MiB, [400_000] * 13), (5 * MiB, [65_536] * 80)],  # PATCHes as clients send them
    ],
)
async def test_appends_at_any_alignment_store_exact_bytes(
    tmp_path: Path, requests: list[tuple[int, list[int]]]
) -> None:
    store = FilesystemStorage(tmp_path, fsync=True)
    upload = "a" * 32
    await store.create_upload(upload)
    data = b""
    for size, sizes in requests:
        body = os.urandom(size)
        assert await store.append(upload, pieces(body, sizes), offset=len(data), limit=0) == (
            len(data) + size
        )
        data += body
    assert (tmp_path / "uploads" / upload).read_bytes() == data
    digest = Digest.of(data)
    assert await store.commit(upload, digest) == len(data)
    assert b"".join([c async for c in store.read(digest)]) == data


async def test_concurrent_uploads_share_the_buffer_pool_safely(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path, fsync=False)
    rng = random.Random(7)
    bodies = {f"{i:032x}": os.urandom(rng.randrange(MiB, 4 * MiB)) for i in range(6)}
    for upload in bodies:
        await store.create_upload(upload)

    async def push(upload: str, body: bytes) -> None:
        cuts = [rng.randrange(1, 300_000) for _ in range(40)]
        await store.append(upload, pieces(body, cuts), offset=0, limit=0)
        assert await store.commit(upload, Digest.of(body)) == len(body)

    await asyncio.gather(*(push(u, b) for u, b in bodies.items()))
    for body in bodies.values():
        assert b"".join([c async for c in store.read(Digest.of(body))]) == body
    assert len(appender._POOL._free) <= appender._POOL_MAX


async def test_failure_midway_truncates_and_frees_descriptors(tmp_path: Path) -> None:
    store = FilesystemStorage(tmp_path, fsync=False)
    upload = "b" * 32
    await store.create_upload(upload)
    kept = os.urandom(10_000)
    await store.append(upload, pieces(kept, []), offset=0, limit=0)
    fds_before = len(os.listdir("/proc/self/fd"))

    async def dies() -> AsyncIterator[bytes]:
        yield os.urandom(3 * MiB)  # two full buffers handed to the writer
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.append(upload, dies(), offset=len(kept), limit=0)
    with pytest.raises(SizeExceeded):
        await store.append(upload, pieces(os.urandom(3 * MiB), [MiB]), offset=10_000, limit=2 * MiB)
    assert await store.upload_size(upload) == len(kept)
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert await store.commit(upload, Digest.of(kept)) == len(kept)


async def test_device_refusing_a_direct_write_falls_back_to_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A block size above ALIGN makes the kernel answer EINVAL; the bytes still all land."""
    direct_fds: set[int] = set()
    real_open, real_write = appender.open_direct, appender._pwrite_all

    def open_direct(path: str, flags: int) -> int | None:
        fd = real_open(path, flags)
        assert fd is not None
        direct_fds.add(fd)
        return fd

    refused: list[int] = []

    def pwrite_all(fd: int, data: memoryview, position: int) -> None:
        if fd in direct_fds:
            refused.append(position)
            raise OSError(errno.EINVAL, "Invalid argument")
        real_write(fd, data, position)

    monkeypatch.setattr(appender, "open_direct", open_direct)
    monkeypatch.setattr(appender, "_pwrite_all", pwrite_all)
    store = FilesystemStorage(tmp_path, fsync=False)
    upload = "c" * 32
    await store.create_upload(upload)
    body = os.urandom(3 * MiB + 5)
    await store.append(upload, pieces(body, [123]), offset=0, limit=0)
    assert len(refused) == 1  # tried once, then the page cache for the rest of the request
    assert await store.commit(upload, Digest.of(body)) == len(body)


async def test_direct_io_off_writes_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(path: str, flags: int) -> int | None:
        raise AssertionError("direct_io=False must not open an O_DIRECT descriptor")

    monkeypatch.setattr(appender, "open_direct", never)
    store = FilesystemStorage(tmp_path, fsync=False, direct_io=False)
    await store.create_upload("d" * 32)
    body = os.urandom(2 * MiB + 1)
    await store.append("d" * 32, pieces(body, [MiB]), offset=0, limit=0)
    assert await store.commit("d" * 32, Digest.of(body)) == len(body)


async def test_cancelled_request_waits_for_its_writer_before_truncating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write still running on a thread when the request is cancelled must end before the
    upload is cut back, or its bytes would land after the cut."""
    real_write = appender._pwrite_all
    started, finished = threading.Event(), threading.Event()

    def slow(fd: int, data: memoryview, position: int) -> None:
        started.set()
        time.sleep(0.3)
        try:
            real_write(fd, data, position)
        finally:
            finished.set()

    monkeypatch.setattr(appender, "_pwrite_all", slow)
    store = FilesystemStorage(tmp_path, fsync=False)
    upload = "e" * 32
    await store.create_upload(upload)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield os.urandom(256 * 1024)
            await asyncio.sleep(0)

    task = asyncio.create_task(store.append(upload, endless(), offset=0, limit=0))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()  # descriptors, buffers and the cut came after the write
    assert await store.upload_size(upload) == 0
    await asyncio.sleep(0.5)  # a stray write would have landed by now
    assert await store.upload_size(upload) == 0


def test_a_forked_child_appends_with_its_own_threads(tmp_path: Path) -> None:
    """Threads do not survive fork: a child must not wait on the parent's writer threads."""

    async def push(upload: str) -> None:
        store = FilesystemStorage(tmp_path, fsync=False)
        await store.create_upload(upload)
        body = os.urandom(3 * MiB)
        await store.append(upload, pieces(body, [MiB]), offset=0, limit=0)
        assert await store.commit(upload, Digest.of(body)) == len(body)

    asyncio.run(push("f" * 32))  # the parent's threads exist now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            asyncio.run(push("0" * 31 + "1"))
        except BaseException:
            os._exit(1)
        os._exit(0)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if done == (0, 0):
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's append hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_the_pool_takes_back_a_buffer_something_still_views() -> None:
    """A failed write's traceback can keep a view of its buffer alive; giving the buffer back
    must not raise over the error being reported."""
    pool = BufferPool(appender.BATCH, appender._POOL_MAX)
    buffers = [pool.take() for _ in range(appender._POOL_MAX + 1)]
    view = memoryview(buffers[-1])
    for buf in buffers:
        pool.give(buf)  # the last one goes past the pool's size: closed, or left to the GC
    assert len(pool._free) == appender._POOL_MAX
    view.release()


@pytest.mark.parametrize(("env", "expected"), [(None, True), ("false", False)])
async def test_the_setting_reaches_the_registry_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str | None, expected: bool
) -> None:
    """`direct_io` (TRUSTYARD_DIRECT_IO) from the settings to the store the server uses."""
    if env is not None:
        monkeypatch.setenv("TRUSTYARD_DIRECT_IO", env)
    async with await open_services(load_settings(data_dir=tmp_path)) as services:
        assert isinstance(services.storage, FilesystemStorage)
        assert services.storage.direct_io is expected
