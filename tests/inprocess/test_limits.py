"""Configured limits and switches in-process: blob and manifest size limits, deletes disabled."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.inprocess.conftest import fresh_data_dir, make_settings, serve
from tests.inprocess.helpers import (
    OCI_MANIFEST,
    code,
    dumps,
    make_image,
    message,
    push_blob,
    push_image,
    put_manifest,
    sha256,
)
from trustyard.config import Settings

BLOB_LIMIT = 1000
MANIFEST_LIMIT = 1024  # the smallest limit the settings allow


@pytest.fixture
async def limited(tmp_path: Path, migrated_database: Path) -> AsyncIterator[httpx.AsyncClient]:
    data_dir = fresh_data_dir(tmp_path / "data", migrated_database)
    settings = make_settings(data_dir, max_blob_bytes=BLOB_LIMIT, max_manifest_bytes=MANIFEST_LIMIT)
    async with serve(settings) as c:
        yield c


@pytest.fixture
async def no_deletes(tmp_path: Path, migrated_database: Path) -> AsyncIterator[httpx.AsyncClient]:
    data_dir = fresh_data_dir(tmp_path / "data", migrated_database)
    async with serve(make_settings(data_dir, delete_enabled=False)) as c:
        yield c


async def test_blob_at_the_limit_is_accepted(limited: httpx.AsyncClient) -> None:
    await push_blob(limited, "l", b"x" * BLOB_LIMIT)


async def test_monolithic_blob_over_the_limit_is_413(limited: httpx.AsyncClient) -> None:
    data = b"x" * (BLOB_LIMIT + 1)
    r = await limited.post("/v2/l/blobs/uploads/", params={"digest": sha256(data)}, content=data)
    assert r.status_code == 413 and code(r) == "SIZE_INVALID"
    assert f"size limit of {BLOB_LIMIT} bytes" in message(r)
    assert (await limited.head(f"/v2/l/blobs/{sha256(data)}")).status_code == 404


async def test_chunked_blob_over_the_limit_is_413(limited: httpx.AsyncClient) -> None:
    location = (await limited.post("/v2/l/blobs/uploads/")).headers["Location"]
    r = await limited.patch(location, content=b"a" * 600, headers={"Content-Range": "0-599"})
    assert r.status_code == 202
    r = await limited.patch(location, content=b"b" * 401, headers={"Content-Range": "600-1000"})
    assert r.status_code == 413 and code(r) == "SIZE_INVALID"
    # The accepted chunk is kept; a chunk that fits still goes through.
    assert (await limited.get(location)).headers["Range"] == "0-599"
    r = await limited.put(
        location,
        params={"digest": sha256(b"a" * 600 + b"b" * 400)},
        content=b"b" * 400,
        headers={"Content-Range": "600-999"},
    )
    assert r.status_code == 201


async def test_last_chunk_over_the_limit_on_put_is_413(limited: httpx.AsyncClient) -> None:
    location = (await limited.post("/v2/l/blobs/uploads/")).headers["Location"]
    data = b"c" * (BLOB_LIMIT + 1)
    r = await limited.put(location, params={"digest": sha256(data)}, content=data)
    assert r.status_code == 413 and code(r) == "SIZE_INVALID"
    assert (await limited.head(f"/v2/l/blobs/{sha256(data)}")).status_code == 404


def _manifest_of_size(size: int) -> tuple[bytes, list[bytes]]:
    image = make_image("sized")
    body = json.loads(image.manifest)
    body["annotations"] = {"pad": ""}
    body["annotations"]["pad"] = "p" * (size - len(dumps(body)))
    data = dumps(body)
    assert len(data) == size
    return data, image.blobs


@pytest.mark.parametrize(("size", "status"), [(MANIFEST_LIMIT, 201), (MANIFEST_LIMIT + 1, 413)])
async def test_configured_manifest_limit(
    limited: httpx.AsyncClient, size: int, status: int
) -> None:
    data, blobs = _manifest_of_size(size)
    for blob in blobs:
        await push_blob(limited, "m", blob)
    r = await put_manifest(limited, "m", "v1", data, OCI_MANIFEST)
    assert r.status_code == status
    if status == 413:
        assert code(r) == "SIZE_INVALID" and f"limit of {MANIFEST_LIMIT} bytes" in message(r)
        assert (await limited.head("/v2/m/manifests/v1")).status_code == 404


async def test_deletes_disabled_is_405(no_deletes: httpx.AsyncClient) -> None:
    image = make_image("kept")
    await push_image(no_deletes, "k", image, "v1")
    for path in (
        "/v2/k/manifests/v1",
        f"/v2/k/manifests/{image.digest}",
        f"/v2/k/blobs/{sha256(image.config)}",
        f"/extensions/v2/k/signatures/{image.digest}",  # simple signatures are content too
    ):
        r = await no_deletes.delete(path)
        assert r.status_code == 405 and code(r) == "UNSUPPORTED", path
        assert "delete_enabled" in message(r)
    assert (await no_deletes.get("/v2/k/manifests/v1")).content == image.manifest
    assert (await no_deletes.head(f"/v2/k/blobs/{sha256(image.config)}")).status_code == 200


@pytest.mark.parametrize(
    "where", ["artifactType", "config.mediaType", "layers[0].mediaType", "layers[0].artifactType"]
)
async def test_lone_surrogate_in_manifest_is_400(settings: Settings, where: str) -> None:
    """As a real server answers: the app's own response, not the exception."""
    async with serve(settings, raise_app_exceptions=False) as c:
        await push_blob(c, "u", b"{}")
        config = {"mediaType": "application/vnd.example", "digest": sha256(b"{}"), "size": 2}
        body: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config,
            "layers": [],
        }
        layer = {"mediaType": "application/vnd.example", "digest": sha256(b"{}"), "size": 2}
        if where == "artifactType":
            body["artifactType"] = "\ud800"
        elif where == "config.mediaType":
            config["mediaType"] = "\ud800"
        else:  # a layer's descriptor: stored for referrers and GC
            layer[where.split(".")[1]] = "\ud800"
            body["layers"] = [layer]
        r = await put_manifest(c, "u", "v1", json.dumps(body).encode(), OCI_MANIFEST)
        assert r.status_code == 400 and code(r) == "MANIFEST_INVALID"
