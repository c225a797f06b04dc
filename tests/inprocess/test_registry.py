"""The `Registry` use case called directly, opened as the app opens it (`open_services`).

No HTTP at all: the layer the handlers call, on SQLite + files in a temp data dir (one test
starts from an empty dir, so the create-and-migrate path runs too).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from tests.inprocess.conftest import make_settings
from tests.inprocess.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    make_index,
    make_referrer,
    push_image,
    referrer_blobs,
    sha256,
)
from trustyard.config import Settings
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry import Registry
from trustyard.wiring import Services, open_services


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def _open(settings: Settings) -> tuple[Services, Registry]:
    """As the CLI opens it (`trustyard gc`); closed with `Services.close`, as the app does."""
    services = await open_services(settings)
    assert services.registry is not None
    return services, services.registry


@pytest.fixture
async def registry(settings: Settings) -> AsyncIterator[Registry]:
    services, reg = await _open(settings)
    try:
        yield reg
    finally:
        await services.close()


async def test_open_services_creates_and_migrates_a_fresh_data_dir(tmp_path: Path) -> None:
    """No template here: `open_services` makes the data dir (0700) and the schema itself."""
    settings = make_settings(tmp_path / "fresh")
    services, reg = await _open(settings)
    try:
        assert settings.data_dir.stat().st_mode & 0o777 == 0o700
        assert settings.database_path.is_file()
        assert (await reg.catalog(None, None)).items == []
        image = make_image("fresh")
        await _push_blobs(reg, "fresh", image.blobs)
        await reg.put_manifest("fresh", "v1", OCI_MANIFEST, image.manifest, [])
        assert (await reg.get_manifest("fresh", "v1")).content == image.manifest
    finally:
        await services.close()


async def _push_blobs(registry: Registry, name: str, blobs: list[bytes]) -> None:
    for blob in blobs:
        digest, size = await registry.uploads.monolithic(
            name, sha256(blob), _chunks(blob), str(len(blob))
        )
        assert (str(digest), size) == (sha256(blob), len(blob))


async def test_push_get_list(registry: Registry) -> None:
    image = make_image("direct")
    await _push_blobs(registry, "lib/app", image.blobs)
    manifest = await registry.put_manifest("lib/app", "v1", OCI_MANIFEST, image.manifest, ["v1.0"])
    assert str(manifest.digest) == image.digest and manifest.media_type == OCI_MANIFEST
    for ref in ("v1", "v1.0", image.digest):
        record = await registry.get_manifest("lib/app", ref, [OCI_MANIFEST])
        assert record.content == image.manifest and str(record.digest) == image.digest
    assert (await registry.tags("lib/app", None, None)).items == ["v1", "v1.0"]
    page = await registry.tags("lib/app", "1", None)
    assert page.items == ["v1"] and page.next_last == "v1"
    assert (await registry.catalog(None, None)).items == ["lib/app"]
    size = await registry.blob_size("lib/app", Digest.parse(sha256(image.config)))
    assert size == len(image.config)
    location = await registry.locate_blob("lib/app", Digest.parse(sha256(image.layers[0])))
    assert location.size == len(image.layers[0])
    data = b"".join([c async for c in registry.storage.read(Digest.parse(sha256(image.layers[0])))])
    assert data == image.layers[0]


async def test_chunked_upload(registry: Registry) -> None:
    data = b"0123456789" * 10
    upload_id = await registry.uploads.start("chunks")
    assert await registry.uploads.status("chunks", upload_id) == 0
    size = await registry.uploads.append("chunks", upload_id, _chunks(data[:40]), "0-39", None)
    assert size == 40
    with pytest.raises(RegistryError) as err:
        await registry.uploads.append("chunks", upload_id, _chunks(data[40:]), "0-59", None)
    assert err.value.code is ErrorCode.RANGE_INVALID
    digest, size = await registry.uploads.finish(
        "chunks", upload_id, sha256(data), _chunks(data[40:]), "40-99", None
    )
    assert (str(digest), size) == (sha256(data), 100)
    assert await registry.blob_size("chunks", digest) == 100


async def test_index_referrers_and_delete(registry: Registry) -> None:
    amd, arm = make_image("amd"), make_image("arm", arch="arm64")
    for image in (amd, arm):
        await _push_blobs(registry, "multi", image.blobs)
        await registry.put_manifest("multi", image.digest, OCI_MANIFEST, image.manifest, [])
    index = make_index(amd, arm)
    await registry.put_manifest("multi", "latest", OCI_INDEX, index, [])
    served = await registry.get_manifest("multi", "latest", [OCI_MANIFEST])
    assert str(served.digest) == amd.digest  # negotiated down to linux/amd64
    referrer = make_referrer(amd.manifest, "application/vnd.example.sig")
    await _push_blobs(registry, "multi", referrer_blobs())
    await registry.put_manifest("multi", sha256(referrer), OCI_MANIFEST, referrer, [])
    found = await registry.referrers("multi", Digest.parse(amd.digest), None)
    assert [str(d.digest) for d in found.descriptors] == [sha256(referrer)]
    assert not found.filtered
    none = await registry.referrers("multi", Digest.parse(amd.digest), "other/type")
    assert none.descriptors == [] and none.filtered
    await registry.delete_manifest("multi", "latest")
    with pytest.raises(RegistryError) as err:
        await registry.get_manifest("multi", "latest")
    assert err.value.code is ErrorCode.MANIFEST_UNKNOWN


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        pytest.param(
            lambda r: r.get_manifest("nothing", "v1"), ErrorCode.NAME_UNKNOWN, id="no-repository"
        ),
        pytest.param(lambda r: r.get_manifest("BAD", "v1"), ErrorCode.NAME_INVALID, id="bad-name"),
        pytest.param(
            lambda r: r.get_manifest("ok", "-bad"), ErrorCode.MANIFEST_UNKNOWN, id="bad-reference"
        ),
        pytest.param(
            lambda r: r.put_manifest("ok", "-bad", OCI_MANIFEST, b"{}", []),
            ErrorCode.MANIFEST_INVALID,
            id="put-bad-reference",
        ),
        pytest.param(
            lambda r: r.put_manifest("ok", "v1", OCI_MANIFEST, b"[", []),
            ErrorCode.MANIFEST_INVALID,
            id="put-bad-json",
        ),
        pytest.param(
            lambda r: r.tags("nothing", None, None), ErrorCode.NAME_UNKNOWN, id="tags-no-repository"
        ),
        pytest.param(
            lambda r: r.tags("ok", "-1", None), ErrorCode.PAGINATION_INVALID, id="tags-bad-n"
        ),
        pytest.param(
            lambda r: r.catalog("x", None), ErrorCode.PAGINATION_INVALID, id="catalog-bad-n"
        ),
        pytest.param(
            lambda r: r.blob_size("ok", Digest.parse(sha256(b"no"))),
            ErrorCode.BLOB_UNKNOWN,
            id="blob-unknown",
        ),
        pytest.param(
            lambda r: r.delete_blob("ok", Digest.parse(sha256(b"no"))),
            ErrorCode.BLOB_UNKNOWN,
            id="delete-unknown-blob",
        ),
        pytest.param(
            lambda r: r.uploads.status("ok", "0" * 32),
            ErrorCode.BLOB_UPLOAD_UNKNOWN,
            id="upload-unknown",
        ),
    ],
)
async def test_typed_errors(
    registry: Registry, call: Callable[[Registry], Awaitable[object]], expected: ErrorCode
) -> None:
    """Use-case failures are `RegistryError`s with the spec's code (HTTP renders them once)."""
    with pytest.raises(RegistryError) as err:
        await call(registry)
    assert err.value.code is expected and err.value.message


async def test_what_the_app_stored_the_use_case_reads(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    """The server and a second opener (the CLI's way) share one store on the same data dir."""
    image = make_image("shared")
    await push_image(client, "shared", image, "v1")
    services, other = await _open(settings)
    try:
        record = await other.get_manifest("shared", "v1")
        assert record.content == image.manifest
        assert (await other.tags("shared", None, None)).items == ["v1"]
    finally:
        await services.close()


def test_settings_are_the_embedded_defaults(settings: Settings) -> None:
    """The in-process app runs the default backends: SQLite metadata and filesystem blobs."""
    assert settings.database_url is None and settings.redis_url is None
    assert settings.storage_backend == "filesystem"
    assert settings.metadata_target == settings.data_dir / "metadata.db"
    assert settings.auth.mode == "none"
