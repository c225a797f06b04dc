"""Blob uploads through `/v2` in-process: every flow of the spec, its status codes and headers."""

from __future__ import annotations

import httpx
import pytest

from tests.inprocess.helpers import code, push_blob, sha256

UUID_HEX = 32


async def test_base_probe(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/")
    assert r.status_code == 200
    assert r.json() == {}
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert r.headers["X-Registry-Supports-Signatures"] == "1"
    h = await client.head("/v2/")
    assert h.status_code == 200 and h.content == b""


async def test_unknown_endpoint_is_a_spec_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v3/")
    assert r.status_code == 404 and code(r) == "NAME_UNKNOWN"
    r = await client.post("/v2/")
    assert r.status_code == 405 and code(r) == "UNSUPPORTED"


async def test_post_then_put_monolithic(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/a/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    upload_id = r.headers["Docker-Upload-UUID"]
    assert location == f"/v2/a/blobs/uploads/{upload_id}" and len(upload_id) == UUID_HEX
    assert r.headers["Range"] == "0-0"
    data = b"hello, monolithic"
    r = await client.put(location, params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/a/blobs/{sha256(data)}"
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    r = await client.get(f"/v2/a/blobs/{sha256(data)}")
    assert r.status_code == 200 and r.content == data


async def test_post_without_trailing_slash_starts_an_upload(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/a/blobs/uploads")
    assert r.status_code == 202 and r.headers["Location"].startswith("/v2/a/blobs/uploads/")


async def test_post_with_digest_is_one_request(client: httpx.AsyncClient) -> None:
    data = b"single request"
    r = await client.post("/v2/one/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 201
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert r.headers["Location"] == f"/v2/one/blobs/{sha256(data)}"
    assert (await client.head(f"/v2/one/blobs/{sha256(data)}")).status_code == 200


async def test_post_with_wrong_digest_stores_nothing(client: httpx.AsyncClient) -> None:
    wrong = sha256(b"other bytes")
    r = await client.post("/v2/m/blobs/uploads/", params={"digest": wrong}, content=b"actual")
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"
    assert (await client.head(f"/v2/m/blobs/{wrong}")).status_code == 404
    assert (await client.head(f"/v2/m/blobs/{sha256(b'actual')}")).status_code == 404


async def test_chunked_upload_with_content_range(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/c/blobs/uploads/")).headers["Location"]
    r = await client.patch(location, content=b"01234", headers={"Content-Range": "0-4"})
    assert r.status_code == 202
    assert r.headers["Range"] == "0-4" and r.headers["Location"] == location
    r = await client.patch(location, content=b"56789", headers={"Content-Range": "5-9"})
    assert r.status_code == 202 and r.headers["Range"] == "0-9"
    r = await client.put(location, params={"digest": sha256(b"0123456789")})
    assert r.status_code == 201
    got = await client.get(f"/v2/c/blobs/{sha256(b'0123456789')}")
    assert got.content == b"0123456789"


async def test_chunked_upload_without_content_range_appends(client: httpx.AsyncClient) -> None:
    """Docker-style streamed PATCHes carry no Content-Range: each appends."""
    location = (await client.post("/v2/c/blobs/uploads/")).headers["Location"]
    for part in (b"ab", b"cd", b"ef"):
        assert (await client.patch(location, content=part)).status_code == 202
    r = await client.put(location, params={"digest": sha256(b"abcdefgh")}, content=b"gh")
    assert r.status_code == 201


@pytest.mark.parametrize("content_range", ["0-4", "3-7", "6-10", "100-104"])
async def test_out_of_order_chunk_is_416(client: httpx.AsyncClient, content_range: str) -> None:
    location = (await client.post("/v2/o/blobs/uploads/")).headers["Location"]
    assert (
        await client.patch(location, content=b"abcde", headers={"Content-Range": "0-4"})
    ).status_code == 202
    r = await client.patch(location, content=b"fghij", headers={"Content-Range": content_range})
    assert r.status_code == 416 and code(r) == "BLOB_UPLOAD_INVALID"
    assert r.headers["Range"] == "0-4" and r.headers["Location"] == location
    assert "send bytes 5-" in r.json()["errors"][0]["message"]
    # The session is as before: the right chunk still goes through.
    r = await client.patch(location, content=b"fghij", headers={"Content-Range": "5-9"})
    assert r.status_code == 202 and r.headers["Range"] == "0-9"


@pytest.mark.parametrize(
    "content_range",
    [
        b"garbage",
        b"5-1",
        b"-1-4",
        "0-\u0663".encode(),
        "0-\u00b2".encode("latin-1"),
        b"0-" + b"9" * 21,
    ],
)
async def test_malformed_content_range_is_416(
    client: httpx.AsyncClient, content_range: bytes
) -> None:
    """Only ASCII digits count (int() would take other scripts' digits, or 5,000 of them)."""
    location = (await client.post("/v2/o/blobs/uploads/")).headers["Location"]
    r = await client.patch(location, content=b"abcd", headers={b"Content-Range": content_range})
    assert r.status_code == 416 and code(r) == "BLOB_UPLOAD_INVALID"
    assert (await client.get(location)).headers["Range"] == "0-0"


async def test_content_range_length_disagreeing_with_body(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/o/blobs/uploads/")).headers["Location"]
    r = await client.patch(location, content=b"abcd", headers={"Content-Range": "0-9"})
    assert r.status_code == 416 and code(r) == "BLOB_UPLOAD_INVALID"
    r = await client.patch(location, content=b"abcd", headers={"Content-Range": "0-2"})
    assert r.status_code == 416
    assert (await client.get(location)).headers["Range"] == "0-0"


async def test_upload_status(client: httpx.AsyncClient) -> None:
    r = await client.post("/v2/s/blobs/uploads/")
    location, upload_id = r.headers["Location"], r.headers["Docker-Upload-UUID"]
    r = await client.get(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-0" and r.headers["Docker-Upload-UUID"] == upload_id
    await client.patch(location, content=b"x" * 10, headers={"Content-Range": "0-9"})
    r = await client.get(location)
    assert r.status_code == 204 and r.headers["Range"] == "0-9"
    assert r.headers["Location"] == location and r.content == b""


@pytest.mark.parametrize("upload_id", ["0" * 32, "not-an-id", "ABCDEF", "f" * 33])
async def test_unknown_upload_is_404(client: httpx.AsyncClient, upload_id: str) -> None:
    path = f"/v2/u/blobs/uploads/{upload_id}"
    r = await client.get(path)
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = await client.patch(path, content=b"x")
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = await client.put(path, params={"digest": sha256(b"")})
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = await client.delete(path)
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_upload_belongs_to_its_repository(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/owner/blobs/uploads/")).headers["Location"]
    other = location.replace("/v2/owner/", "/v2/intruder/")
    for r in (
        await client.get(other),
        await client.patch(other, content=b"x"),
        await client.put(other, params={"digest": sha256(b"x")}, content=b"x"),
        await client.delete(other),
    ):
        assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"
    assert (await client.get(location)).status_code == 204


async def test_cancel_upload(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/x/blobs/uploads/")).headers["Location"]
    await client.patch(location, content=b"abc")
    r = await client.delete(location)
    assert r.status_code == 204
    r = await client.get(location)
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = await client.put(location, params={"digest": sha256(b"abc")})
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"
    r = await client.delete(location)
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_finished_upload_is_gone(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/p/blobs/uploads/")).headers["Location"]
    assert (
        await client.put(location, params={"digest": sha256(b"data")}, content=b"data")
    ).status_code == 201
    r = await client.patch(location, content=b"more")
    assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_digest_mismatch_on_put_keeps_the_session(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/d/blobs/uploads/")).headers["Location"]
    await client.patch(location, content=b"first", headers={"Content-Range": "0-4"})
    r = await client.put(
        location,
        params={"digest": sha256(b"nope")},
        content=b"second",
        headers={"Content-Range": "5-10"},
    )
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"
    assert (await client.get(location)).headers["Range"] == "0-4"
    r = await client.put(
        location,
        params={"digest": sha256(b"firstsecond")},
        content=b"second",
        headers={"Content-Range": "5-10"},
    )
    assert r.status_code == 201


async def test_put_without_digest(client: httpx.AsyncClient) -> None:
    location = (await client.post("/v2/nd/blobs/uploads/")).headers["Location"]
    r = await client.put(location, content=b"abc")
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"
    assert "digest query parameter is required" in r.json()["errors"][0]["message"]
    assert (await client.get(location)).status_code == 204


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:abc",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
        "sha256:" + "G" * 64,
        "sha256:" + "A" * 64,
        "sha512:" + "a" * 64,
    ],
)
async def test_invalid_digests(client: httpx.AsyncClient, digest: str) -> None:
    r = await client.post("/v2/d/blobs/uploads/", params={"digest": digest}, content=b"x")
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"
    location = (await client.post("/v2/d/blobs/uploads/")).headers["Location"]
    r = await client.put(location, params={"digest": digest}, content=b"x")
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"


async def test_sha512_blob(client: httpx.AsyncClient) -> None:
    import hashlib

    data = b"sha512 content"
    digest = "sha512:" + hashlib.sha512(data).hexdigest()
    r = await client.post("/v2/s5/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest
    r = await client.get(f"/v2/s5/blobs/{digest}")
    assert r.status_code == 200 and r.content == data


@pytest.mark.parametrize(
    ("length", "body"),
    [(b"3", b"abcdef"), (b"10", b"abc"), (b"x1", b"abc"), ("\u00b2".encode("latin-1"), b"abc")],
)
async def test_content_length_that_lies(
    client: httpx.AsyncClient, length: bytes, body: bytes
) -> None:
    """The declared length is checked against the bytes received: SIZE_INVALID, nothing kept."""
    location = (await client.post("/v2/cl/blobs/uploads/")).headers["Location"]
    r = await client.patch(location, content=body, headers={b"Content-Length": length})
    assert r.status_code == 400 and code(r) == "SIZE_INVALID"
    assert (await client.get(location)).headers["Range"] == "0-0"


async def test_same_blob_twice_is_one_blob(client: httpx.AsyncClient) -> None:
    await push_blob(client, "twice", b"same")
    await push_blob(client, "twice", b"same")
    r = await client.get(f"/v2/twice/blobs/{sha256(b'same')}")
    assert r.status_code == 200 and r.content == b"same"


# -- cross-repository mounts -----------------------------------------------------------------
async def test_mount_from_another_repository(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "src", b"shared layer")
    r = await client.post("/v2/dst/blobs/uploads/", params={"mount": digest, "from": "src"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/dst/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    r = await client.get(f"/v2/dst/blobs/{digest}")
    assert r.status_code == 200 and r.content == b"shared layer"


async def test_mount_without_from_finds_the_blob(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "anywhere", b"auto mount")
    r = await client.post("/v2/dst2/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest
    assert (await client.head(f"/v2/dst2/blobs/{digest}")).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"mount": sha256(b"never pushed"), "from": "src"},
        {"mount": sha256(b"never pushed")},
        {"mount": "not-a-digest", "from": "src"},
        {"mount": sha256(b"in src"), "from": "UPPER"},
        {"mount": sha256(b"in src"), "from": "empty"},
    ],
)
async def test_mount_that_cannot_be_done_starts_an_upload(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """202 with a session: the spec's fallback; nothing is linked that was not there."""
    await push_blob(client, "src", b"in src")
    await client.post("/v2/empty/blobs/uploads/")
    r = await client.post("/v2/dst/blobs/uploads/", params=params)
    assert r.status_code == 202
    assert r.headers["Location"].startswith("/v2/dst/blobs/uploads/")
    assert (await client.get(r.headers["Location"])).status_code == 204
    if params["mount"].startswith("sha256:"):
        assert (await client.head(f"/v2/dst/blobs/{params['mount']}")).status_code == 404


@pytest.mark.parametrize(
    "query",
    [
        "mount={d}&mount={d}&from=src",
        "mount={d}&from=src&from=other",
        "mount={d}&from=src&from=src",
        "digest={d}&digest={d}",
    ],
)
async def test_repeated_mount_or_from_is_400(client: httpx.AsyncClient, query: str) -> None:
    digest = await push_blob(client, "src", b"repeat")
    r = await client.post("/v2/dst/blobs/uploads/?" + query.format(d=digest), content=b"repeat")
    assert r.status_code == 400 and code(r) == "UNSUPPORTED"
    assert "at most once" in r.json()["errors"][0]["message"]
    assert (await client.head(f"/v2/dst/blobs/{digest}")).status_code == 404


async def test_mount_with_digest_also_given_prefers_the_mount(client: httpx.AsyncClient) -> None:
    digest = await push_blob(client, "src", b"both")
    r = await client.post(
        "/v2/dst/blobs/uploads/", params={"mount": digest, "from": "src", "digest": digest}
    )
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest
