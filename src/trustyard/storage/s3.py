"""S3-compatible object storage (aiobotocore): blobs shared by stateless replicas.

Layout under the bucket prefix: `blobs/<alg>/<xx>/<hex>` for committed blobs,
`uploads/<id>/{state.json,tail,data}` for uploads and `quarantine/<alg>/<hex>` for blobs a scrub
found corrupt. Chunked uploads stream into an S3 multipart
upload, `part_size` bytes per part; bytes that do not yet fill a part wait in a small `tail`
object, so a replica never spools a whole blob and any replica can take the next chunk.

Hash state: hashlib cannot be serialised (and `rehash` does not support OpenSSL 3), so each
replica keeps the hash of uploads it fed in memory; when the replica that finishes an upload did
not see every byte, it re-hashes the assembled object by reading it back from S3 (never from a
client). Routing an upload's requests to one replica (haproxy `balance uri`) makes that rare.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

from trustyard.oci.digest import Digest, Digester
from trustyard.oci.errors import RegistryError
from trustyard.storage.base import BlobLocation, BlobStat
from trustyard.storage.errors import (
    DigestMismatch,
    OffsetMismatch,
    SizeExceeded,
    StorageUnavailable,
    UploadNotFound,
)

_UPLOAD_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_READ_CHUNK = 1 << 20
# S3 copies up to 5 GiB in one request; beyond, copy in parts.
_MAX_SINGLE_COPY = 5 * 1024**3


class S3Options(Protocol):
    """What the backend reads of its settings: `config.S3Settings` (defaults and validation are
    there, once); tests may pass that model directly."""

    @property
    def bucket(self) -> str: ...
    @property
    def endpoint_url(self) -> str | None: ...
    @property
    def region(self) -> str: ...
    @property
    def access_key(self) -> str | None: ...
    @property
    def secret_key(self) -> str | None: ...
    @property
    def prefix(self) -> str: ...
    @property
    def redirect(self) -> bool: ...
    @property
    def presign_seconds(self) -> int: ...
    @property
    def part_size(self) -> int: ...
    @property
    def sse(self) -> str | None:
        """ "AES256" or "aws:kms"."""

    @property
    def kms_key_id(self) -> str | None: ...


@dataclass
class _UploadState:
    mpu: str | None = None
    parts: list[dict[str, Any]] = field(default_factory=list)  # {"n", "etag", "size"}
    size: int = 0
    tail: int = 0
    tail_sha256: str = ""  # the tail is read back from S3; this proves it came back intact
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def parts_size(self) -> int:
        return sum(int(p["size"]) for p in self.parts)


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


def is_outage(exc: BaseException) -> bool:
    """True when `exc` says the object store cannot answer (a 5xx after botocore's retries, no
    answer at all, a dropped connection) rather than refusing this request (a 4xx).

    Only botocore's errors count: a bare ConnectionError here may be the client's own request
    body breaking off inside `append`, which is no storage outage."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return status >= 500 or status == 0
    return isinstance(exc, BotoCoreError)


_P = ParamSpec("_P")
_T = TypeVar("_T")


def _edge(
    method: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Convert an outage to `StorageUnavailable` where a port method returns to its caller."""

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            if is_outage(exc):
                raise StorageUnavailable() from exc
            raise

    return guarded


def _edge_stream(method: Callable[_P, AsyncIterator[_T]]) -> Callable[_P, AsyncIterator[_T]]:
    """`_edge` for the streaming port methods; closes the inner stream when the caller stops."""

    @functools.wraps(method)
    async def guarded(*args: _P.args, **kwargs: _P.kwargs) -> AsyncIterator[_T]:
        stream = method(*args, **kwargs)
        try:
            async for item in stream:
                yield item
        except Exception as exc:
            if is_outage(exc):
                raise StorageUnavailable() from exc
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    return guarded


class S3Storage:
    """Blob and upload storage in an S3 bucket."""

    def __init__(self, options: S3Options) -> None:
        self.options = options
        self._client: Any = None
        self._client_cm: Any = None
        self._client_lock = asyncio.Lock()
        self._digesters: dict[str, Digester] = {}
        prefix = options.prefix.strip("/")
        self._prefix = f"{prefix}/" if prefix else ""

    # -- client lifecycle ----------------------------------------------------------------------
    async def _s3(self) -> Any:
        if self._client is None:
            async with self._client_lock:
                if self._client is None:
                    from aiobotocore.config import AioConfig
                    from aiobotocore.session import get_session

                    o = self.options
                    self._client_cm = get_session().create_client(
                        "s3",
                        endpoint_url=o.endpoint_url,
                        region_name=o.region,
                        aws_access_key_id=o.access_key,
                        aws_secret_access_key=o.secret_key,
                        config=AioConfig(
                            signature_version="s3v4",
                            s3={"addressing_style": "path"},
                            max_pool_connections=50,
                            # Transient 5xx, throttling and timeouts are retried with back-off.
                            retries={"max_attempts": 5, "mode": "standard"},
                            connect_timeout=5,
                            read_timeout=60,
                        ),
                    )
                    self._client = await self._client_cm.__aenter__()
        return self._client

    async def close(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
            self._client = self._client_cm = None

    def _sse(self) -> dict[str, str]:
        extra: dict[str, str] = {}
        if self.options.sse:
            extra["ServerSideEncryption"] = self.options.sse
        if self.options.kms_key_id:
            extra["SSEKMSKeyId"] = self.options.kms_key_id
        return extra

    # -- keys ----------------------------------------------------------------------------------
    def blob_key(self, digest: Digest) -> str:
        return f"{self._prefix}blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}"

    def _upload_key(self, upload_id: str, name: str) -> str:
        if not _UPLOAD_ID_RE.match(upload_id):
            raise UploadNotFound("upload id is not one this registry issued")
        return f"{self._prefix}uploads/{upload_id}/{name}"

    # -- blobs ---------------------------------------------------------------------------------
    def local_path(self, digest: Digest) -> Path | None:
        """Objects are not local files: an export streams them."""
        return None

    @_edge
    async def stat(self, digest: Digest) -> BlobStat | None:
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.options.bucket, Key=self.blob_key(digest))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return BlobStat(size=int(head["ContentLength"]), modified=head["LastModified"].timestamp())

    @_edge
    async def locate(self, digest: Digest) -> BlobLocation | None:
        st = await self.stat(digest)
        if st is None:
            return None
        if not self.options.redirect:
            return BlobLocation(size=st.size)
        s3 = await self._s3()
        url = await s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.options.bucket, "Key": self.blob_key(digest)},
            ExpiresIn=self.options.presign_seconds,
        )
        return BlobLocation(size=st.size, url=url)

    @_edge_stream
    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        async for chunk in self._read_key(self.blob_key(digest), offset, length):
            yield chunk

    async def _read_key(
        self, key: str, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        s3 = await self._s3()
        kwargs: dict[str, Any] = {"Bucket": self.options.bucket, "Key": key}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            kwargs["Range"] = f"bytes={offset}-{end}"
        response = await s3.get_object(**kwargs)
        async with response["Body"] as body:
            while chunk := await body.read(_READ_CHUNK):
                yield chunk

    @_edge
    async def delete(self, digest: Digest) -> bool:
        if await self.stat(digest) is None:
            return False
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.options.bucket, Key=self.blob_key(digest))
        return True

    @_edge
    async def quarantine(self, digest: Digest) -> bool:
        """Server-side copy to `quarantine/`, then delete: S3 has no rename."""
        st = await self.stat(digest)
        if st is None:
            return False
        target = f"{self._prefix}quarantine/{digest.algorithm}/{digest.hex}"
        await self._copy(self.blob_key(digest), target, st.size)
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.options.bucket, Key=self.blob_key(digest))
        return True

    @_edge_stream
    async def walk(self) -> AsyncIterator[tuple[Digest, float]]:
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(
            Bucket=self.options.bucket, Prefix=f"{self._prefix}blobs/"
        ):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(self._prefix) :].split("/")
                if len(parts) != 4:
                    continue
                try:
                    digest = Digest.parse(f"{parts[1]}:{parts[3]}")
                except RegistryError:
                    continue
                yield digest, obj["LastModified"].timestamp()

    # -- upload state --------------------------------------------------------------------------
    async def _load(self, upload_id: str) -> _UploadState | None:
        s3 = await self._s3()
        try:
            response = await s3.get_object(
                Bucket=self.options.bucket, Key=self._upload_key(upload_id, "state.json")
            )
            async with response["Body"] as body:
                raw = await body.read()
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise
        return _UploadState(**json.loads(raw))

    async def _save(self, upload_id: str, state: _UploadState) -> None:
        state.updated = time.time()
        s3 = await self._s3()
        await s3.put_object(
            Bucket=self.options.bucket,
            Key=self._upload_key(upload_id, "state.json"),
            Body=json.dumps(asdict(state)).encode(),
        )

    async def _require(self, upload_id: str) -> _UploadState:
        state = await self._load(upload_id)
        if state is None:
            raise UploadNotFound()
        return state

    # -- uploads -------------------------------------------------------------------------------
    @_edge
    async def create_upload(self, upload_id: str) -> None:
        self._upload_key(upload_id, "state.json")
        await self._save(upload_id, _UploadState())
        self._digesters[upload_id] = Digester()

    @_edge
    async def upload_size(self, upload_id: str) -> int | None:
        try:
            state = await self._load(upload_id)
        except UploadNotFound:
            return None
        return None if state is None else state.size

    @_edge
    async def append(
        self, upload_id: str, chunks: AsyncIterator[bytes], offset: int, limit: int
    ) -> int:
        state = await self._require(upload_id)
        if state.size != offset:
            raise OffsetMismatch(offset, state.size)
        s3 = await self._s3()
        bucket, part_size = self.options.bucket, self.options.part_size
        cached = self._digesters.get(upload_id)
        digester = cached if cached is not None and cached.size == state.size else None
        saved = digester.copy() if digester is not None else None
        # The pending tail (less than one part) comes first; at most `part_size` bytes buffered.
        buffer = await self._read_tail(upload_id, state)
        parts = list(state.parts)
        written = state.size
        try:
            async for chunk in chunks:
                written += len(chunk)
                if limit and written > limit:
                    raise SizeExceeded(limit)
                if digester is not None:
                    digester.update(chunk)
                buffer += chunk
                while len(buffer) >= part_size:
                    if state.mpu is None:
                        created = await s3.create_multipart_upload(
                            Bucket=bucket, Key=self._upload_key(upload_id, "data"), **self._sse()
                        )
                        state.mpu = created["UploadId"]
                    number = len(parts) + 1
                    response = await s3.upload_part(
                        Bucket=bucket,
                        Key=self._upload_key(upload_id, "data"),
                        UploadId=state.mpu,
                        PartNumber=number,
                        Body=bytes(buffer[:part_size]),
                    )
                    parts.append({"n": number, "etag": response["ETag"], "size": part_size})
                    del buffer[:part_size]
            await s3.put_object(
                Bucket=bucket, Key=self._upload_key(upload_id, "tail"), Body=bytes(buffer)
            )
        except BaseException:
            # Nothing recorded: the state still describes the upload as before this request
            # (parts uploaded meanwhile are overwritten by the next request's part numbers).
            if saved is not None:
                self._digesters[upload_id] = saved
            else:
                self._digesters.pop(upload_id, None)
            raise
        state.parts, state.tail, state.size = parts, len(buffer), written
        state.tail_sha256 = hashlib.sha256(buffer).hexdigest()
        await self._save(upload_id, state)
        if digester is not None:
            self._digesters[upload_id] = digester
        else:
            self._digesters.pop(upload_id, None)
        return written

    @_edge
    async def commit(self, upload_id: str, expected: Digest) -> int:
        state = await self._require(upload_id)
        s3 = await self._s3()
        bucket = self.options.bucket
        digester = self._digesters.get(upload_id)
        known = (
            digester is not None
            and digester.size == state.size
            and digester.algorithm == expected.algorithm
        )
        if known and digester is not None and digester.digest() != expected:
            raise self._mismatch(expected, digester.digest())
        tail = await self._read_tail(upload_id, state)
        target = self.blob_key(expected)
        if state.mpu is None:
            # Small blob: it never filled a part, the tail is the whole blob.
            if not known:
                check = Digester(expected.algorithm)
                check.update(bytes(tail))
                if check.digest() != expected:
                    raise self._mismatch(expected, check.digest())
            await s3.put_object(Bucket=bucket, Key=target, Body=bytes(tail), **self._sse())
        else:
            parts = list(state.parts)
            data_key = self._upload_key(upload_id, "data")
            if tail:
                response = await s3.upload_part(
                    Bucket=bucket,
                    Key=data_key,
                    UploadId=state.mpu,
                    PartNumber=len(parts) + 1,
                    Body=bytes(tail),
                )
                parts.append({"n": len(parts) + 1, "etag": response["ETag"], "size": len(tail)})
            await s3.complete_multipart_upload(
                Bucket=bucket,
                Key=data_key,
                UploadId=state.mpu,
                MultipartUpload={
                    "Parts": [{"PartNumber": p["n"], "ETag": p["etag"]} for p in parts]
                },
            )
            if not known:
                check = Digester(expected.algorithm)
                async for piece in self._read_key(data_key):
                    check.update(piece)
                if check.digest() != expected:
                    # The assembled object cannot be reopened for appends: the session ends,
                    # as Distribution's does on a digest mismatch.
                    await self.cancel(upload_id)
                    raise self._mismatch(expected, check.digest())
            await self._copy(data_key, target, state.size)
        await self._remove_upload_objects(upload_id, abort=None)
        self._digesters.pop(upload_id, None)
        return state.size

    async def _read_tail(self, upload_id: str, state: _UploadState) -> bytearray:
        tail = bytearray()
        if state.tail:
            async for piece in self._read_key(self._upload_key(upload_id, "tail"), 0, state.tail):
                tail += piece
        if len(tail) != state.tail or (
            state.tail_sha256 and hashlib.sha256(tail).hexdigest() != state.tail_sha256
        ):
            raise StorageUnavailable(
                "object storage returned different bytes than were stored for this upload; retry"
            )
        return tail

    @staticmethod
    def _mismatch(expected: Digest, actual: Digest) -> DigestMismatch:
        return DigestMismatch(str(expected), str(actual))

    async def _copy(self, source: str, target: str, size: int) -> None:
        """Server-side copy: the bytes never leave the object store."""
        s3 = await self._s3()
        bucket = self.options.bucket
        copy_source = {"Bucket": bucket, "Key": source}
        if size <= _MAX_SINGLE_COPY:
            await s3.copy_object(Bucket=bucket, Key=target, CopySource=copy_source, **self._sse())
            return
        created = await s3.create_multipart_upload(Bucket=bucket, Key=target, **self._sse())
        mpu, parts, start, number, step = created["UploadId"], [], 0, 1, 1024**3
        try:
            while start < size:
                end = min(start + step, size) - 1
                response = await s3.upload_part_copy(
                    Bucket=bucket,
                    Key=target,
                    UploadId=mpu,
                    PartNumber=number,
                    CopySource=copy_source,
                    CopySourceRange=f"bytes={start}-{end}",
                )
                parts.append({"PartNumber": number, "ETag": response["CopyPartResult"]["ETag"]})
                start, number = end + 1, number + 1
            await s3.complete_multipart_upload(
                Bucket=bucket, Key=target, UploadId=mpu, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await s3.abort_multipart_upload(Bucket=bucket, Key=target, UploadId=mpu)
            raise

    @_edge
    async def truncate(self, upload_id: str, size: int) -> None:
        """Only the tail can be cut back here; past a part boundary the session is cancelled."""
        state = await self._require(upload_id)
        if size >= state.parts_size:
            state.tail, state.size = size - state.parts_size, size
            state.tail_sha256 = ""  # only the length can be checked for a cut-back tail
            await self._save(upload_id, state)
            self._digesters.pop(upload_id, None)
        else:
            await self.cancel(upload_id)

    @_edge
    async def cancel(self, upload_id: str) -> None:
        self._digesters.pop(upload_id, None)
        try:
            state = await self._load(upload_id)
        except UploadNotFound:
            return
        await self._remove_upload_objects(upload_id, abort=state.mpu if state else None)

    async def _remove_upload_objects(self, upload_id: str, abort: str | None) -> None:
        s3 = await self._s3()
        bucket = self.options.bucket
        if abort is not None:
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(
                    Bucket=bucket, Key=self._upload_key(upload_id, "data"), UploadId=abort
                )
        await s3.delete_objects(
            Bucket=bucket,
            Delete={
                "Objects": [
                    {"Key": self._upload_key(upload_id, n)} for n in ("state.json", "tail", "data")
                ],
                "Quiet": True,
            },
        )

    @_edge_stream
    async def uploads(self) -> AsyncIterator[tuple[str, float]]:
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(
            Bucket=self.options.bucket, Prefix=f"{self._prefix}uploads/"
        ):
            for obj in page.get("Contents", []):
                parts = obj["Key"][len(self._prefix) :].split("/")
                if len(parts) == 3 and parts[2] == "state.json" and _UPLOAD_ID_RE.match(parts[1]):
                    yield parts[1], obj["LastModified"].timestamp()
