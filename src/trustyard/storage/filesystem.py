"""Filesystem backend: blobs at `<root>/blobs/<alg>/<xx>/<hex>`, uploads at `<root>/uploads/<id>`,
blobs that failed a scrub at `<root>/quarantine/<alg>/<hex>`.

A blob becomes visible only through an atomic rename after its digest was verified, so a crash
at any point leaves no partial blob. Paths are built from validated digests and upload UUIDs only;
repository names never reach the filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio

from trustyard.oci.digest import Digest, Digester
from trustyard.oci.errors import RegistryError
from trustyard.storage.appender import Appender
from trustyard.storage.base import BlobLocation, BlobStat
from trustyard.storage.blob_reader import BlobReader, RecentBlobs
from trustyard.storage.errors import (
    BlobNotFound,
    DigestMismatch,
    OffsetMismatch,
    UploadBusy,
    UploadNotFound,
)

_UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_READ_CHUNK = 1 << 20
# Blob bodies go out in reads of this size (see `read`).
_STREAM_CHUNK = 2 << 20


class FilesystemStorage:
    """Blob and upload storage on a local directory."""

    def __init__(self, root: Path, *, fsync: bool = True, direct_io: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        # Upload bytes bypass the page cache where the filesystem allows it (appender.py).
        self.direct_io = direct_io
        self._blobs = root / "blobs"
        self._uploads = root / "uploads"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)
        # Per-process hash state of uploads this worker has fed, keyed by upload id. hashlib
        # state cannot be persisted, so when another worker (or a restarted one) received a
        # chunk, `commit` re-hashes the file from disk instead; correctness never depends on it.
        self._digesters: dict[str, Digester] = {}
        # Blobs this process read lately: a second read goes through the page cache.
        self._recent_reads = RecentBlobs()

    async def close(self) -> None:
        """Nothing to release: files are opened per request."""

    # -- blobs -------------------------------------------------------------------------------
    def blob_path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.hex[:2] / digest.hex

    def local_path(self, digest: Digest) -> Path | None:
        return self.blob_path(digest)

    async def stat(self, digest: Digest) -> BlobStat | None:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return None
        return BlobStat(size=st.st_size, modified=st.st_mtime)

    async def locate(self, digest: Digest) -> BlobLocation | None:
        st = await self.stat(digest)
        return None if st is None else BlobLocation(size=st.size)

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream a blob in large `pread`s on a worker thread, reading the next while the
        caller sends this one.

        Measured on loopback (docs/benchmarks.md): 2 MiB reads handed to the ASGI server send
        ~1.7x faster than its own file sending (`http.response.pathsend`: 128 KiB blocks with
        a thread hand-off each) and beat the reference's read-and-write loop; 4 MiB was ~5 %
        faster for ~10 MiB more peak memory, 1 MiB ~25 % slower.

        Cold blobs (read for the first time by this process, bytes not cached) are read
        around the page cache, hot ones through it: blob_reader.py says why.
        """
        hot = self._recent_reads.touch(str(digest))
        try:
            reader = BlobReader(
                str(self.blob_path(digest)), chunk=_STREAM_CHUNK, direct=self.direct_io and not hot
            )
        except FileNotFoundError:
            raise BlobNotFound(str(digest)) from None
        end = reader.size if length is None else offset + length
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[bytes] | None = None
        try:
            position = offset
            if position < end:
                pending = loop.run_in_executor(
                    None, reader.read, min(_STREAM_CHUNK, end - position), position
                )
            while pending is not None:
                chunk = await pending
                pending = None
                if not chunk:  # the file is shorter than its metadata said: stop, never spin
                    return
                position += len(chunk)
                if position < end:
                    pending = loop.run_in_executor(
                        None, reader.read, min(_STREAM_CHUNK, end - position), position
                    )
                yield chunk
        finally:
            # With a read still queued or running (the client went away), the reader releases
            # its descriptors and buffer when that read ends.
            reader.close()

    async def delete(self, digest: Digest) -> bool:
        try:
            self.blob_path(digest).unlink()
            return True
        except FileNotFoundError:
            return False

    async def quarantine(self, digest: Digest) -> bool:
        """Atomic rename out of `blobs/`: a reader that already opened the file finishes on
        the old bytes, every later read and stat finds nothing."""
        target = self.root / "quarantine" / digest.algorithm / digest.hex
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self.blob_path(digest), target)
        except FileNotFoundError:
            return False
        return True

    async def walk(self) -> AsyncIterator[tuple[Digest, float]]:
        for alg_dir in sorted(self._blobs.iterdir()):
            for prefix in sorted(alg_dir.iterdir()) if alg_dir.is_dir() else ():
                for entry in sorted(prefix.iterdir()):
                    try:
                        digest = Digest.parse(f"{alg_dir.name}:{entry.name}")
                        mtime = entry.stat().st_mtime
                    except (RegistryError, FileNotFoundError):
                        continue
                    yield digest, mtime

    # -- uploads -----------------------------------------------------------------------------
    def _upload_path(self, upload_id: str) -> Path:
        if not _UPLOAD_ID_RE.match(upload_id):
            raise UploadNotFound("upload id is not one this registry issued")
        return self._uploads / upload_id

    async def create_upload(self, upload_id: str) -> None:
        self._upload_path(upload_id).touch(exist_ok=False)
        self._digesters[upload_id] = Digester()

    async def upload_size(self, upload_id: str) -> int | None:
        try:
            return self._upload_path(upload_id).stat().st_size
        except FileNotFoundError:
            return None

    @contextlib.contextmanager
    def _locked(self, upload_id: str, mode: str) -> Iterator[Any]:
        """Open the upload file under an exclusive flock: one writer per upload, across workers."""
        path = self._upload_path(upload_id)
        try:
            f = open(path, mode)
        except FileNotFoundError:
            raise UploadNotFound() from None
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise UploadBusy() from None
                raise
            if not path.exists():  # committed or cancelled while we waited for the file
                raise UploadNotFound()
            yield f
        finally:
            f.close()

    async def append(
        self, upload_id: str, chunks: AsyncIterator[bytes], offset: int, limit: int
    ) -> int:
        with self._locked(upload_id, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            if size != offset:
                raise OffsetMismatch(offset, size)
            cached = self._digesters.get(upload_id)
            digester = cached if cached is not None and cached.size == size else None
            saved = digester.copy() if digester is not None else None
            path = str(self._upload_path(upload_id)) if self.direct_io else None
            try:
                written = await Appender(f.fileno(), size, direct_path=path).feed(
                    chunks, digester, limit
                )
            except BaseException:
                os.ftruncate(f.fileno(), offset)
                if saved is not None:
                    self._digesters[upload_id] = saved
                else:
                    self._digesters.pop(upload_id, None)
                raise
            if digester is not None:
                self._digesters[upload_id] = digester
            else:
                self._digesters.pop(upload_id, None)
            return written

    async def commit(self, upload_id: str, expected: Digest) -> int:
        with self._locked(upload_id, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            digester = self._digesters.get(upload_id)
            if (
                digester is None
                or digester.size != size
                or digester.algorithm != expected.algorithm
            ):
                digester = await anyio.to_thread.run_sync(_hash_file, f, expected.algorithm)
            actual = digester.digest()
            if actual != expected:
                raise DigestMismatch(str(expected), str(actual))
            if self.fsync:
                await anyio.to_thread.run_sync(os.fsync, f.fileno())
            target = self.blob_path(expected)
            target.parent.mkdir(parents=True, exist_ok=True)
            # A fresh mtime tells a concurrent GC pass that these bytes are new (see gc.py).
            os.utime(f.fileno())
            # Atomic publish; an identical blob pushed concurrently is simply replaced by itself.
            os.replace(self._upload_path(upload_id), target)
            self._digesters.pop(upload_id, None)
            return size

    async def truncate(self, upload_id: str, size: int) -> None:
        with self._locked(upload_id, "r+b") as f:
            f.truncate(size)
        self._digesters.pop(upload_id, None)

    async def cancel(self, upload_id: str) -> None:
        self._digesters.pop(upload_id, None)
        with contextlib.suppress(FileNotFoundError):
            self._upload_path(upload_id).unlink()

    async def uploads(self) -> AsyncIterator[tuple[str, float]]:
        for entry in sorted(self._uploads.iterdir()):
            if not _UPLOAD_ID_RE.match(entry.name):
                continue
            with contextlib.suppress(FileNotFoundError):
                yield entry.name, entry.stat().st_mtime


def _hash_file(f: Any, algorithm: str) -> Digester:
    digester = Digester(algorithm)
    f.seek(0)
    while chunk := f.read(_READ_CHUNK):
        digester.update(chunk)
    return digester
