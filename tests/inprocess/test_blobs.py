"""Blob reads and deletes in-process: digests, ranges, conditional GETs, unknown blobs."""

from __future__ import annotations

import httpx
import pytest

from tests.inprocess.helpers import code, push_blob, sha256

DATA = bytes(range(256)) * 4  # 1024 bytes, every byte value


async def test_get_and_head(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "b", DATA)
    r = await client.get(f"/v2/b/blobs/{digest}")
    assert r.status_code == 200 and r.content == DATA
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Length"] == str(len(DATA))
    assert r.headers["Content-Type"] == "application/octet-stream"
    assert r.headers["ETag"] == f'"{digest}"'
    assert r.headers["Accept-Ranges"] == "bytes"
    h = await client.head(f"/v2/b/blobs/{digest}")
    assert h.status_code == 200 and h.content == b""
    assert h.headers["Docker-Content-Digest"] == digest
    assert h.headers["Content-Length"] == str(len(DATA))


async def test_empty_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "b", b"")
    r = await client.get(f"/v2/b/blobs/{digest}")
    assert r.status_code == 200 and r.content == b"" and r.headers["Content-Length"] == "0"


async def test_if_none_match_is_304(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "b", DATA)
    r = await client.get(f"/v2/b/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["Docker-Content-Digest"] == digest
    r = await client.get(f"/v2/b/blobs/{digest}", headers={"If-None-Match": '"sha256:other"'})
    assert r.status_code == 200 and r.content == DATA


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=10-19", 10, 19),
        ("bytes=1000-", 1000, 1023),
        ("bytes=-24", 1000, 1023),
        ("bytes=1000-5000", 1000, 1023),  # an end past the blob is clipped
        ("bytes=-5000", 0, 1023),
    ],
)
async def test_range_is_206(client: httpx.AsyncClient, header: str, start: int, end: int) -> None:
    digest = await push_blob(client, "r", DATA)
    r = await client.get(f"/v2/r/blobs/{digest}", headers={"Range": header})
    assert r.status_code == 206
    assert r.content == DATA[start : end + 1]
    assert r.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert r.headers["Content-Length"] == str(end - start + 1)
    assert r.headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize(
    "header",
    [
        "bytes=1024-",
        "bytes=20-10",
        "bytes=0-1,5-6",
        "items=0-1",
        "bytes=abc",
        "bytes=1_0-20",
        "bytes=\u0663-4",
        "bytes=-0",
    ],
)
async def test_unsatisfiable_range_is_416(client: httpx.AsyncClient, header: str) -> None:
    digest = await push_blob(client, "r", DATA)
    r = await client.get(f"/v2/r/blobs/{digest}", headers={b"Range": header.encode("utf-8")})
    assert r.status_code == 416 and code(r) == "BLOB_UPLOAD_INVALID"
    assert r.headers["Content-Range"] == f"bytes */{len(DATA)}"
    assert "Range" in r.json()["errors"][0]["message"]


async def test_unknown_blob_is_404(client: httpx.AsyncClient) -> None:
    await push_blob(client, "b", DATA)
    missing = sha256(b"never pushed")
    r = await client.get(f"/v2/b/blobs/{missing}")
    assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"] == {"digest": missing}
    h = await client.head(f"/v2/b/blobs/{missing}")
    assert h.status_code == 404 and h.content == b""
    # A repository that does not exist says the same: the blob is what is unknown.
    r = await client.get(f"/v2/nowhere/blobs/{missing}")
    assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN"


async def test_blob_is_per_repository(client: httpx.AsyncClient) -> None:
    """A blob pushed to one repository is not readable through another."""
    digest = await push_blob(client, "mine", DATA)
    r = await client.get(f"/v2/theirs/blobs/{digest}")
    assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN"


@pytest.mark.parametrize(
    "digest", ["sha256:abc", "nocolon", "sha256:" + "A" * 64, "sha1:" + "a" * 40]
)
async def test_invalid_digest_is_400(client: httpx.AsyncClient, digest: str) -> None:
    r = await client.get(f"/v2/b/blobs/{digest}")
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"
    r = await client.delete(f"/v2/b/blobs/{digest}")
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"


async def test_delete_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "del", DATA)
    r = await client.delete(f"/v2/del/blobs/{digest}")
    assert r.status_code == 202
    r = await client.get(f"/v2/del/blobs/{digest}")
    assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN"
    r = await client.delete(f"/v2/del/blobs/{digest}")
    assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN"


async def test_delete_unlinks_only_this_repository(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "one", DATA)
    await push_blob(client, "two", DATA)
    assert (await client.delete(f"/v2/one/blobs/{digest}")).status_code == 202
    r = await client.get(f"/v2/two/blobs/{digest}")
    assert r.status_code == 200 and r.content == DATA
