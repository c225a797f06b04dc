"""The Notary HTTP API over ASGI: routes, caching headers, multipart parsing, error shapes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tests.trust.helpers import GUN, Repo, close_service, open_service
from trustyard.crypto.notary_keys import PublicKey
from trustyard.http import trust_routes as trust_server
from trustyard.http.errors import EXCEPTION_HANDLERS

BASE = f"/v2/{GUN}/_trust"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Starlette]:
    app = Starlette(routes=trust_server.routes(), exception_handlers=EXCEPTION_HANDLERS)
    app.state.trust = await open_service(tmp_path)
    app.state.trust_max_upload_bytes = 64 * 1024
    yield app
    await close_service(app.state.trust)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://trust") as c:
        yield c


def parts(files: dict[str, bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (role, data, "application/octet-stream")) for role, data in files.items()]


def error_code(resp: httpx.Response) -> str:
    body = resp.json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1
    assert body["errors"][0]["message"]
    return str(body["errors"][0]["code"])


async def initialise(client: httpx.AsyncClient) -> tuple[Repo, dict[str, bytes]]:
    key = (await client.get(f"{BASE}/tuf/timestamp.key")).json()
    repo = Repo()
    root = repo.root(key)
    targets = repo.targets({"v1": b"one"})
    files = {
        "root": root,
        "targets": targets,
        "snapshot": repo.snapshot({"root": root, "targets": targets}),
    }
    resp = await client.post(f"{BASE}/tuf/", files=parts(files))
    assert resp.status_code == 200, resp.text
    assert resp.content == b""
    return repo, files


async def test_missing_collection_is_metadata_not_found(client: httpx.AsyncClient) -> None:
    resp = await client.get(f"{BASE}/tuf/root.json")
    assert resp.status_code == 404
    assert error_code(resp) == "METADATA_NOT_FOUND"


async def test_key_endpoint_shape_get_or_create_and_rotate(client: httpx.AsyncClient) -> None:
    first = await client.get(f"{BASE}/tuf/timestamp.key")
    assert first.status_code == 200
    body = first.json()
    assert body["keytype"] == "ed25519" and body["keyval"]["private"] is None
    assert len(PublicKey.from_json(body).public) == 32
    assert (await client.get(f"{BASE}/tuf/timestamp.key")).json() == body
    rotated = await client.post(f"{BASE}/tuf/timestamp.key")
    assert rotated.status_code == 200 and rotated.json() != body
    assert (await client.post(f"{BASE}/tuf/root.key")).status_code == 404


async def test_get_by_role_hash_and_version_with_cache_headers(client: httpx.AsyncClient) -> None:
    _, files = await initialise(client)
    root = await client.get(f"{BASE}/tuf/root.json")
    assert root.content == files["root"]
    assert root.headers["cache-control"] == "public, max-age=300, s-maxage=300, must-revalidate"
    assert root.headers["last-modified"].endswith("GMT")
    for role, data in files.items():
        by_hash = await client.get(f"{BASE}/tuf/{role}.{hashlib.sha256(data).hexdigest()}.json")
        assert by_hash.status_code == 200 and by_hash.content == data
        assert by_hash.headers["cache-control"] == "public, max-age=2592000, s-maxage=2592000"
        by_version = await client.get(f"{BASE}/tuf/1.{role}.json")
        assert by_version.content == data
    ts = await client.get(f"{BASE}/tuf/timestamp.json")
    assert ts.status_code == 200 and b'"_type":"Timestamp"' in ts.content
    unknown = await client.get(f"{BASE}/tuf/targets.{'0' * 64}.json")
    assert unknown.status_code == 404 and error_code(unknown) == "METADATA_NOT_FOUND"


async def test_invalid_update_carries_notarys_serialisable_error(client: httpx.AsyncClient) -> None:
    repo, files = await initialise(client)
    t2 = repo.targets({"v2": b"two"}, version=2)
    bad_snapshot = repo.snapshot({"root": files["root"], "targets": files["targets"]}, version=2)
    resp = await client.post(f"{BASE}/tuf/", files=parts({"targets": t2, "snapshot": bad_snapshot}))
    assert resp.status_code == 400
    err = resp.json()["errors"][0]
    assert err["code"] == "INVALID_UPDATE"
    assert err["detail"]["Name"] == "ErrBadSnapshot"
    assert "targets" in err["detail"]["Error"]["Msg"]
    assert (await client.get(f"{BASE}/tuf/targets.json")).content == files["targets"]


async def test_version_error_code(client: httpx.AsyncClient) -> None:
    _, files = await initialise(client)
    resp = await client.post(
        f"{BASE}/tuf/", files=parts({"targets": files["targets"], "snapshot": files["snapshot"]})
    )
    assert resp.status_code == 400 and error_code(resp) == "VERSION"


@pytest.mark.parametrize(
    ("content_type", "body", "code"),
    [
        ("application/json", b"{}", "MALFORMED_UPLOAD"),
        ("multipart/form-data", b"--x\r\n", "MALFORMED_UPLOAD"),
        ("multipart/form-data; boundary=x", b"--x\r\nno end", "MALFORMED_UPLOAD"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="files"\r\n\r\n{}\r\n--x--\r\n',
            "NO_FILENAME",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="timestamp"\r\n\r\n{}\r\n--x--\r\n',
            "INVALID_ROLE",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="targets/../root"\r\n\r\n{}\r\n--x--\r\n',
            "INVALID_ROLE",
        ),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="targets"\r\n\r\n{not json\r\n--x--\r\n',
            "MALFORMED_JSON",
        ),
    ],
)
async def test_malformed_uploads(
    client: httpx.AsyncClient, content_type: str, body: bytes, code: str
) -> None:
    resp = await client.post(f"{BASE}/tuf/", content=body, headers={"content-type": content_type})
    assert resp.status_code == 400
    assert error_code(resp) == code
    assert (await client.get(f"{BASE}/tuf/root.json")).status_code == 404


async def test_oversized_upload_is_refused(client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * (70 * 1024) + b"}"
    resp = await client.post(f"{BASE}/tuf/", files=parts({"targets": big}))
    assert resp.status_code == 413 and error_code(resp) == "TOO_LARGE"


@pytest.mark.parametrize("gun", ["a/%2e%2e/b", "a//b", "a*b", "%20a", "a/%2e/b"])
async def test_path_tricks_in_guns_are_refused(client: httpx.AsyncClient, gun: str) -> None:
    resp = await client.get(f"/v2/{gun}/_trust/tuf/root.json")
    assert resp.status_code == 400 and error_code(resp) == "INVALID_GUN"
    resp = await client.post(f"/v2/{gun}/_trust/tuf/timestamp.key")
    assert resp.status_code == 400


@pytest.mark.parametrize(
    "name", ["evil.json", "targets/.json", "root.key", "1.evil.json", "root.abc.json"]
)
async def test_unknown_roles_are_not_found(client: httpx.AsyncClient, name: str) -> None:
    resp = await client.get(f"{BASE}/tuf/{name}")
    assert resp.status_code == 404 and error_code(resp) == "METADATA_NOT_FOUND"


async def test_delete_and_changefeed(client: httpx.AsyncClient) -> None:
    await initialise(client)
    assert (await client.delete(f"{BASE}/tuf/")).status_code == 200
    assert (await client.get(f"{BASE}/tuf/root.json")).status_code == 404
    feed = (await client.get(f"{BASE}/changefeed")).json()
    assert feed["count"] == 2
    first, second = feed["records"]
    assert set(first) == {"ID", "CreatedAt", "GUN", "Version", "SHA256", "Category"}
    assert (first["GUN"], first["Version"], first["Category"]) == (GUN, 1, "update")
    assert second["Category"] == "deletion"
    latest = (await client.get("/v2/_trust/changefeed?records=-1")).json()
    assert latest["count"] == 1 and latest["records"][0]["Category"] == "deletion"
    after = (await client.get(f"/v2/_trust/changefeed?change_id={first['ID']}")).json()
    assert [r["ID"] for r in after["records"]] == [second["ID"]]
    bad = await client.get("/v2/_trust/changefeed?records=lots")
    assert bad.status_code == 400 and error_code(bad) == "INVALID_PARAMETERS"


async def test_deep_nesting_and_huge_versions_are_client_errors(client: httpx.AsyncClient) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = await client.post(f"{BASE}/tuf/", files=parts({"targets": deep[:60_000]}))
    assert resp.status_code == 400 and error_code(resp) == "MALFORMED_JSON"
    repo, files = await initialise(client)
    huge = repo.targets({"v": b"v"}, version=2**40)
    resp = await client.post(f"{BASE}/tuf/", files=parts({"targets": huge}))
    assert resp.status_code == 400 and error_code(resp) == "INVALID_UPDATE"
    assert "larger than" in resp.json()["errors"][0]["detail"]["Error"]["Msg"]
    assert (await client.get(f"{BASE}/tuf/targets.json")).content == files["targets"]
