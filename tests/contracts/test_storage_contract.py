"""One suite every blob-storage backend must pass (the filesystem backend today)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.services.s3 import ACCESS_KEY, SECRET_KEY
from trustyard.config import S3Settings
from trustyard.oci.digest import Digest
from trustyard.storage.base import Storage
from trustyard.storage.errors import DigestMismatch, OffsetMismatch, SizeExceeded, UploadNotFound
from trustyard.storage.filesystem import FilesystemStorage
from trustyard.storage.s3 import S3Storage


def make(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Storage:
    if backend == "s3":
        server = request.getfixturevalue("s3_server")
        return S3Storage(
            S3Settings(
                bucket=request.getfixturevalue("s3_bucket"),
                endpoint_url=server.endpoint,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
                part_size=5 * 1024 * 1024,
            )
        )
    return FilesystemStorage(tmp_path, fsync=False)


@pytest.fixture(params=["filesystem", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend = make(request.param, tmp_path, request)
    yield backend
    await backend.close()


def reopen(store: Storage, tmp_path: Path) -> Storage:
    """A second backend object on the same data: another replica, or after a restart."""
    if isinstance(store, S3Storage):
        return S3Storage(store.options)
    return FilesystemStorage(tmp_path, fsync=False)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def failing(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p
    raise ConnectionResetError("client went away")


async def test_upload_commit_and_read(store: Storage) -> None:
    data = os.urandom(300_000)
    await store.create_upload("a" * 32)
    size = await store.append("a" * 32, chunks(data[:1000], data[1000:]), offset=0, limit=0)
    assert size == len(data) == await store.upload_size("a" * 32)
    digest = Digest.of(data)
    assert await store.commit("a" * 32, digest) == len(data)
    st = await store.stat(digest)
    assert st is not None and st.size == len(data)
    read = b"".join([c async for c in store.read(digest)])
    assert read == data
    assert b"".join([c async for c in store.read(digest, 10, 20)]) == data[10:30]
    assert await store.upload_size("a" * 32) is None


async def test_reads_across_stream_chunks(store: Storage) -> None:
    """Ranges that start, end and straddle the backend's read-size boundaries come back exact,
    and a reader abandoned after its first chunk (client gone) releases what it held."""
    data = os.urandom(5 * 1024 * 1024 + 123)
    await store.create_upload("c" * 32)
    await store.append("c" * 32, chunks(data), offset=0, limit=0)
    digest = Digest.of(data)
    await store.commit("c" * 32, digest)
    mib = 1024 * 1024
    for offset, length in [(0, None), (2 * mib - 1, 2), (2 * mib, 2 * mib), (1, 4 * mib + 5)]:
        end = None if length is None else offset + length
        got = b"".join([c async for c in store.read(digest, offset, length)])
        assert got == data[offset:end], (offset, length)
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        reader = store.read(digest)
        assert await reader.__anext__()
        await reader.aclose()  # type: ignore[attr-defined]
    for _ in range(50):  # a read already running on a thread closes its file when it ends
        if len(os.listdir("/proc/self/fd")) <= fds_before:
            break
        await asyncio.sleep(0.02)
    assert len(os.listdir("/proc/self/fd")) <= fds_before


async def test_append_in_several_requests_rehashes_when_needed(
    store: Storage, tmp_path: Path
) -> None:
    data = os.urandom(12 * 1024 * 1024)  # crosses S3 part boundaries
    await store.create_upload("b" * 32)
    await store.append("b" * 32, chunks(data[:6_000_000]), offset=0, limit=0)
    # A fresh backend object (another worker, or after a restart) finishes the upload.
    other = reopen(store, tmp_path)
    await other.append("b" * 32, chunks(data[6_000_000:]), offset=6_000_000, limit=0)
    assert await other.commit("b" * 32, Digest.of(data)) == len(data)
    assert b"".join([c async for c in other.read(Digest.of(data))]) == data
    await other.close()


async def test_wrong_offset_is_range_error(store: Storage) -> None:
    await store.create_upload("c" * 32)
    await store.append("c" * 32, chunks(b"abc"), offset=0, limit=0)
    with pytest.raises(OffsetMismatch) as err:
        await store.append("c" * 32, chunks(b"def"), offset=10, limit=0)
    assert (err.value.offset, err.value.size) == (10, 3)


async def test_failed_append_leaves_upload_as_before(store: Storage) -> None:
    await store.create_upload("d" * 32)
    await store.append("d" * 32, chunks(b"keep"), offset=0, limit=0)
    with pytest.raises(ConnectionResetError):
        await store.append("d" * 32, failing(b"lost" * 1000), offset=4, limit=0)
    assert await store.upload_size("d" * 32) == 4
    assert await store.commit("d" * 32, Digest.of(b"keep")) == 4


async def test_size_limit(store: Storage) -> None:
    await store.create_upload("e" * 32)
    with pytest.raises(SizeExceeded, match="limit of 150 bytes"):
        await store.append("e" * 32, chunks(b"x" * 100, b"y" * 100), offset=0, limit=150)
    assert await store.upload_size("e" * 32) == 0


async def test_digest_mismatch_keeps_upload_and_publishes_nothing(store: Storage) -> None:
    await store.create_upload("f" * 32)
    await store.append("f" * 32, chunks(b"data"), offset=0, limit=0)
    wrong = Digest.of(b"other")
    with pytest.raises(DigestMismatch) as err:
        await store.commit("f" * 32, wrong)
    assert (err.value.expected, err.value.actual) == (str(wrong), str(Digest.of(b"data")))
    assert await store.stat(wrong) is None and await store.stat(Digest.of(b"data")) is None
    assert await store.upload_size("f" * 32) == 4


async def test_unknown_and_malformed_upload_ids(store: Storage) -> None:
    assert await store.upload_size("0" * 32) is None
    for bad in ("../../etc", "A" * 32, ""):
        with pytest.raises(UploadNotFound):
            await store.create_upload(bad)
    with pytest.raises(UploadNotFound):
        await store.append("0" * 32, chunks(b"x"), offset=0, limit=0)


async def test_delete_walk_and_cancel(store: Storage) -> None:
    for i, payload in enumerate((b"one", b"two")):
        uid = f"{i:032x}"
        await store.create_upload(uid)
        await store.append(uid, chunks(payload), offset=0, limit=0)
        await store.commit(uid, Digest.of(payload))
    assert {str(d) for d, _ in [x async for x in store.walk()]} == {
        str(Digest.of(b"one")),
        str(Digest.of(b"two")),
    }
    assert await store.delete(Digest.of(b"one")) is True
    assert await store.delete(Digest.of(b"one")) is False
    await store.create_upload("9" * 32)
    assert [u async for u, _ in store.uploads()] == ["9" * 32]
    await store.cancel("9" * 32)
    assert [u async for u, _ in store.uploads()] == []


async def test_quarantine_hides_the_blob_until_the_right_bytes_are_committed(
    store: Storage,
) -> None:
    """A quarantined blob is neither stat'ed, located, read nor walked; a fresh commit of the
    same digest (a re-push after a scrub found it corrupt) publishes it again."""
    data = os.urandom(70_000)
    digest = Digest.of(data)
    await store.create_upload("e" * 32)
    await store.append("e" * 32, chunks(data), offset=0, limit=0)
    await store.commit("e" * 32, digest)
    assert await store.quarantine(digest) is True
    assert await store.stat(digest) is None
    assert await store.locate(digest) is None
    assert digest not in [d async for d, _ in store.walk()]
    assert await store.quarantine(digest) is False
    await store.create_upload("f" * 32)
    await store.append("f" * 32, chunks(data), offset=0, limit=0)
    assert await store.commit("f" * 32, digest) == len(data)
    assert b"".join([c async for c in store.read(digest)]) == data
