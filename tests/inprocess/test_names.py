"""Repository names in-process: the spec's grammar before any I/O, on every route.

Traversal attempts are sent both percent-encoded (through httpx, which the app sees decoded, as
behind a server) and literally (straight into the ASGI app: httpx would remove `..` segments
as curl does without `--path-as-is`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from starlette.applications import Starlette

from tests.inprocess.helpers import code, make_image, push_blob, push_image, sha256

BAD_NAMES = [
    "UPPER",
    "Mixed/case",
    "a..b",
    "-lead",
    "trail-",
    "a_",
    "a/-b",
    "a//b",
    "/abs",
    "a/",
    "x" * 256,
    "a/" * 127 + "ab",  # 256 characters of valid components
]


def _routes(name: str) -> list[tuple[str, str]]:
    digest = sha256(b"x")
    return [
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/latest"),
        ("GET", f"/v2/{name}/blobs/{digest}"),
        ("DELETE", f"/v2/{name}/blobs/{digest}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={digest}"),
        ("GET", f"/v2/{name}/blobs/uploads/{'0' * 32}"),
        ("PATCH", f"/v2/{name}/blobs/uploads/{'0' * 32}"),
        ("GET", f"/v2/{name}/referrers/{digest}"),
    ]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_invalid_names_are_name_invalid_everywhere(
    client: httpx.AsyncClient, name: str
) -> None:
    for method, path in _routes(name):
        r = await client.request(method, path, content=b"x" if method != "GET" else None)
        assert r.status_code == 400, (method, path, r.status_code)
        assert code(r) == "NAME_INVALID", (method, path)
        assert "repository name" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("name", ["a%0Ab", "a%0A", "%0Aa"])
async def test_newline_in_name_reaches_no_route(client: httpx.AsyncClient, name: str) -> None:
    """Today's answer: the router's `{name:path}` does not match a newline, so 404 (no I/O)."""
    for method, path in _routes(name):
        r = await client.request(method, path, content=b"x" if method != "GET" else None)
        assert r.status_code == 404 and code(r) == "NAME_UNKNOWN", (method, path)


async def test_longest_valid_name(client: httpx.AsyncClient) -> None:
    name = "a/" * 126 + "abc"
    assert len(name) == 255
    image = make_image("long")
    await push_image(client, name, image, "v1")
    r = await client.get(f"/v2/{name}/tags/list")
    assert r.status_code == 200 and r.json() == {"name": name, "tags": ["v1"]}


@pytest.mark.parametrize(
    "name", ["a", "a0/b1", "lib/ubuntu", "a.b", "a_b", "a__b", "a---b", "x/y/z/w", "0"]
)
async def test_valid_names(client: httpx.AsyncClient, name: str) -> None:
    await push_blob(client, name, b"ok")
    r = await client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 202


ENCODED_TRAVERSALS = [
    "/v2/%2e%2e/%2e%2e/evil/blobs/uploads/",
    "/v2/a%2F..%2F..%2F..%2Fevil/blobs/uploads/",
    "/v2/%2E%2E%2Fevil/blobs/uploads/",
    "/v2/..%5C..%5Cevil/blobs/uploads/",
    "/v2/%2e%2e/%2e%2e/evil/blobs/uploads/?digest=" + sha256(b"payload"),
    "/v2/%2e%2e/evil/manifests/latest",
]


@pytest.mark.parametrize("path", ENCODED_TRAVERSALS)
async def test_encoded_traversal_is_name_invalid(
    client: httpx.AsyncClient, tmp_path: Path, path: str
) -> None:
    method = "PUT" if "/manifests/" in path else "POST"
    r = await client.request(method, path, content=b"payload")
    assert r.status_code == 400 and code(r) == "NAME_INVALID"
    _assert_nothing_escaped(tmp_path)


async def _asgi(
    app: Starlette, method: str, raw_path: bytes, body: bytes = b""
) -> tuple[int, bytes]:
    """One request straight into the ASGI app, its path exactly as given (no normalisation)."""
    path, _, query = raw_path.partition(b"?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path.decode("latin-1")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"registry.test"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1234),
        "server": ("registry.test", 80),
        "state": {},
    }
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


@pytest.mark.parametrize(
    ("method", "raw_path", "status"),
    [
        ("POST", b"/v2/../../../tmp/evil/blobs/uploads/", 400),
        ("POST", b"/v2/a/../../../../evil/blobs/uploads/", 400),
        ("PUT", b"/v2/../evil/manifests/latest", 400),
        ("GET", b"/v2/./x/tags/list", 400),
        ("GET", b"/v2/../../etc/passwd", 404),  # no route: the router's 404
    ],
)
async def test_literal_traversal_never_escapes(
    app: Starlette,
    client: httpx.AsyncClient,
    tmp_path: Path,
    method: str,
    raw_path: bytes,
    status: int,
) -> None:
    got, body = await _asgi(app, method, raw_path, b"payload")
    assert got == status, body
    assert b'"code":"NAME_INVALID"' in body or (status == 404 and b"NAME_UNKNOWN" in body)
    _assert_nothing_escaped(tmp_path)


def _assert_nothing_escaped(tmp_path: Path) -> None:
    data_dir = (tmp_path / "data").resolve()
    assert not Path("/tmp/evil").exists()
    assert not (tmp_path / "evil").exists() and not (data_dir / "evil").exists()
    for p in tmp_path.rglob("*"):
        assert p.resolve().is_relative_to(tmp_path.resolve()), p
    stored = [p for p in (data_dir / "storage").rglob("*") if p.is_file()]
    assert stored == [], stored
