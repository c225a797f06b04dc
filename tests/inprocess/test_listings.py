"""Tag lists and the catalog in-process: lexical order, `n`/`last` paging and `Link` headers."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.inprocess.helpers import (
    OCI_MANIFEST,
    code,
    make_image,
    push_blob,
    push_image,
    put_manifest,
)

TAGS = ["1.0", "10", "2.0", "Latest", "a", "b", "latest", "z_z"]  # lexical (byte) order


async def _tagged(client: httpx.AsyncClient, name: str, tags: list[str]) -> None:
    image = make_image(name)
    await push_image(client, name, image, tags[0])
    for tag in tags[1:]:
        assert (
            await put_manifest(client, name, tag, image.manifest, OCI_MANIFEST)
        ).status_code == 201


def _next(r: httpx.Response) -> str | None:
    link = r.headers.get("Link")
    if link is None:
        return None
    m = re.fullmatch(r'<([^>]+)>; rel="next"', link)
    assert m is not None, link
    return m.group(1)


async def test_tags_in_lexical_order(client: httpx.AsyncClient) -> None:
    await _tagged(client, "t", list(reversed(TAGS)))
    r = await client.get("/v2/t/tags/list")
    assert r.status_code == 200
    assert r.json() == {"name": "t", "tags": TAGS}
    assert "Link" not in r.headers


async def test_tags_paged_with_link(client: httpx.AsyncClient) -> None:
    await _tagged(client, "t", TAGS)
    r = await client.get("/v2/t/tags/list", params={"n": 3})
    assert r.json()["tags"] == TAGS[:3]
    assert r.headers["Link"] == '</v2/t/tags/list?n=3&last=2.0>; rel="next"'
    seen: list[str] = []
    url: str | None = "/v2/t/tags/list?n=3"
    while url is not None:
        r = await client.get(url)
        assert r.status_code == 200
        seen += r.json()["tags"]
        url = _next(r)
    assert seen == TAGS


async def test_tags_last_without_n(client: httpx.AsyncClient) -> None:
    await _tagged(client, "t", TAGS)
    r = await client.get("/v2/t/tags/list", params={"last": "b"})
    assert r.json()["tags"] == ["latest", "z_z"] and "Link" not in r.headers
    r = await client.get("/v2/t/tags/list", params={"last": "zzz"})
    assert r.status_code == 200 and r.json()["tags"] == []


async def test_tags_page_exactly_the_rest_has_no_link(client: httpx.AsyncClient) -> None:
    await _tagged(client, "t", TAGS)
    r = await client.get("/v2/t/tags/list", params={"n": len(TAGS)})
    assert r.json()["tags"] == TAGS and "Link" not in r.headers


async def test_tags_n_zero_is_empty_without_link(client: httpx.AsyncClient) -> None:
    await _tagged(client, "t", TAGS)
    r = await client.get("/v2/t/tags/list", params={"n": 0})
    assert r.status_code == 200 and r.json() == {"name": "t", "tags": []}
    assert "Link" not in r.headers


@pytest.mark.parametrize(
    "n", ["abc", "-1", "1.5", "0x10", "9" * 30 + "x", "1_0", " 5", "\u0969", "+3"]
)
async def test_bad_n_is_400(client: httpx.AsyncClient, n: str) -> None:
    await _tagged(client, "t", ["v1"])
    for path in ("/v2/t/tags/list", "/v2/_catalog"):
        r = await client.get(path, params={"n": n})
        assert r.status_code == 400 and code(r) == "PAGINATION_NUMBER_INVALID", path
        assert "non-negative integer" in r.json()["errors"][0]["message"]


@pytest.mark.parametrize("query", ["n=1&n=2", "last=a&last=b"])
async def test_repeated_paging_parameter_is_400(client: httpx.AsyncClient, query: str) -> None:
    await _tagged(client, "t", ["v1"])
    for path in ("/v2/t/tags/list", "/v2/_catalog"):
        r = await client.get(f"{path}?{query}")
        assert r.status_code == 400 and code(r) == "UNSUPPORTED"


@pytest.mark.parametrize("n", [10**4 + 1, 10**12, 10**20, int("9" * 4000)])
async def test_huge_n_is_capped(client: httpx.AsyncClient, n: int) -> None:
    """Capped before the query: a LIMIT past SQLite's 64-bit integers would be a 500."""
    await _tagged(client, "t", TAGS)
    for path, key in (("/v2/t/tags/list", "tags"), ("/v2/_catalog", "repositories")):
        r = await client.get(path, params={"n": str(n)})
        assert r.status_code == 200 and "Link" not in r.headers
        assert r.json()[key] == (TAGS if key == "tags" else ["t"])


async def test_n_with_more_digits_than_python_parses_is_capped(client: httpx.AsyncClient) -> None:
    """Any number of ASCII digits is a number: past the cap it is the cap (int() alone would
    refuse 5,000 digits while taking 4,000)."""
    await _tagged(client, "t", ["v1"])
    r = await client.get("/v2/t/tags/list", params={"n": "9" * 5000})
    assert r.status_code == 200 and r.json()["tags"] == ["v1"]


async def test_tags_of_unknown_repository_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/nothing/tags/list")
    assert r.status_code == 404 and code(r) == "NAME_UNKNOWN"
    r = await client.get("/v2/nothing/tags/list", params={"n": 0})
    assert r.status_code == 404 and code(r) == "NAME_UNKNOWN"


async def test_repository_without_tags_is_an_empty_list(client: httpx.AsyncClient) -> None:
    await push_blob(client, "untagged", b"blob only")
    r = await client.get("/v2/untagged/tags/list")
    assert r.status_code == 200 and r.json() == {"name": "untagged", "tags": []}


async def test_catalog_paged(client: httpx.AsyncClient) -> None:
    names = ["a", "a/b", "b", "lib/x", "z"]
    for name in reversed(names):
        await push_image(client, name, make_image(name), "v1")
    await push_blob(client, "blobs-only", b"no manifest")  # not listed: nothing to pull
    await client.post("/v2/upload-only/blobs/uploads/")
    r = await client.get("/v2/_catalog")
    assert r.status_code == 200 and r.json() == {"repositories": names}
    assert "Link" not in r.headers
    r = await client.get("/v2/_catalog", params={"n": 2})
    assert r.json()["repositories"] == ["a", "a/b"]
    assert r.headers["Link"] == '</v2/_catalog?n=2&last=a%2Fb>; rel="next"'
    seen: list[str] = []
    url: str | None = "/v2/_catalog?n=2"
    while url is not None:
        r = await client.get(url)
        seen += r.json()["repositories"]
        url = _next(r)
    assert seen == names
    r = await client.get("/v2/_catalog", params={"n": 0})
    assert r.json() == {"repositories": []} and "Link" not in r.headers
    r = await client.get("/v2/_catalog", params={"last": "lib/x"})
    assert r.json() == {"repositories": ["z"]}


async def test_empty_catalog(client: httpx.AsyncClient) -> None:
    r = await client.get("/v2/_catalog")
    assert r.status_code == 200 and r.json() == {"repositories": []}
