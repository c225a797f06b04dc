"""What the parser property tests (tests/unit/test_parsers_properties.py) found, replayed
against a running server: each answered 500 or was accepted before the parser fix."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.images import OCI_MANIFEST, make_image, push_image, sha256
from tests.integration.server import ServerProcess


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("findings") / "data").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        yield c


def _code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


@pytest.mark.parametrize("media_type", ["[]", "{}", '["application/json"]', "2"])
def test_non_string_media_type_is_manifest_invalid(client: httpx.Client, media_type: str) -> None:
    """`{"mediaType": []}` raised TypeError (unhashable) before the string check: a 500."""
    body = '{"schemaVersion": 2, "mediaType": ' + media_type + ', "layers": []}'
    r = client.put("/v2/mt/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID", r.text
    assert "mediaType must be a string" in r.text


@pytest.mark.parametrize(
    "content_range",
    ["0-" + "9" * 5000, "9" * 25 + "-" + "9" * 26, "0-4\n", "0-\u0664"],
    ids=["5000-digit-end", "26-digit-end", "newline", "arabic-digit"],
)
def test_hostile_content_range_is_416(client: httpx.Client, content_range: str) -> None:
    """A 5,000-digit end made int() raise ValueError: a 500."""
    location = client.post("/v2/cr/blobs/uploads/").headers["Location"]
    try:
        r = client.patch(
            location,
            content=b"abcde",
            headers={"Content-Range": content_range.encode("utf-8")},
        )
    except httpx.LocalProtocolError:  # the client itself refuses a newline in a header
        assert "\n" in content_range
        return
    assert r.status_code == 416 and _code(r) == "BLOB_UPLOAD_INVALID", r.text
    assert client.get(location).status_code == 204  # the session is still usable


def test_range_header_takes_only_ascii_digits(client: httpx.Client) -> None:
    blob = b"0123456789"
    with httpx.Client(base_url=client.base_url, timeout=30) as c:
        digest = sha256(blob)
        r = c.post("/v2/rg/blobs/uploads/", params={"digest": digest}, content=blob)
        assert r.status_code == 201
        ok = c.get(f"/v2/rg/blobs/{digest}", headers={"Range": "bytes=2-4"})
        assert ok.status_code == 206 and ok.content == b"234"
        for value in ("bytes=1_0-", "bytes=2 -4", "bytes=0-" + "9" * 5000, "bytes=+1-2"):
            r = c.get(f"/v2/rg/blobs/{digest}", headers={"Range": value})
            assert r.status_code == 416, (value, r.status_code)
            assert r.headers["Content-Range"] == "bytes */10"


def test_tag_with_trailing_newline_is_refused(client: httpx.Client) -> None:
    """`$` matched before a trailing newline: "v1\n" was a valid tag (names too, but the
    routes never match a newline in a name; the reference segment takes one)."""
    image = make_image(1, seed="nl")
    push_image(client, "nl", image, "v1")
    r = client.put(
        "/v2/nl/manifests/v1%0A", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID", r.text
    tags = client.get("/v2/nl/tags/list").json()["tags"]
    assert tags == ["v1"]


def test_digest_with_trailing_newline_is_digest_invalid(client: httpx.Client) -> None:
    blob = b"newline digest"
    digest = sha256(blob)
    r = client.post("/v2/nd/blobs/uploads/", params={"digest": digest}, content=blob)
    assert r.status_code == 201
    r = client.get(f"/v2/nd/blobs/{digest}%0A")
    assert r.status_code == 400 and _code(r) == "DIGEST_INVALID", r.text
