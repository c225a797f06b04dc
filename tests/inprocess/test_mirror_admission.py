"""The admission seam of the pull-through mirror, against a real in-process upstream trustyard.

The mirror's upstream client talks to a second app over httpx's ASGI transport: the same
upstream protocol as over a socket, in milliseconds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from tests.inprocess.conftest import fresh_data_dir, make_settings
from tests.inprocess.helpers import code, make_image, message, push_image
from tests.inprocess.mirrors import mirror_pair
from trustyard.http.app import create_app
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.mirror import AdmitAll, Mirrors, UpstreamSource
from trustyard.remote.upstream import UpstreamRegistry

UPSTREAM_URL = "http://upstream.test"


class Refuse:
    """An admission that records what it was asked and refuses (as a policy would)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, ManifestRecord, UpstreamSource]] = []
        self.fetched: bytes = b""

    async def admit(
        self, name: str, reference: str, manifest: ManifestRecord, source: UpstreamSource
    ) -> None:
        self.calls.append((name, reference, manifest, source))
        # The seam lets the admission fetch what it needs through the same client.
        answer = await source.upstream.get_bytes(
            f"/v2/{source.repository}/manifests/{manifest.digest}",
            limit=1 << 20,
            scope=UpstreamRegistry.pull_scope(source.repository),
            headers={"Accept": manifest.media_type},
        )
        self.fetched = answer.content
        raise RegistryError(ErrorCode.DENIED, "no signature by a trusted key")


@pytest.fixture
async def pair(
    tmp_path: Path, migrated_database: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette]]:
    upstream_app = create_app(make_settings(fresh_data_dir(tmp_path / "up", migrated_database)))
    mirrors = [{"prefix": "hub", "upstream": UPSTREAM_URL, "upstream_prefix": "lib"}]
    mirror_settings = make_settings(
        fresh_data_dir(tmp_path / "mirror", migrated_database), mirrors=mirrors
    )
    mirror_app = create_app(mirror_settings)
    async with mirror_pair(upstream_app, mirror_app, UPSTREAM_URL) as (up, down):
        yield up, down, mirror_app


async def test_refused_admission_stores_nothing(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette],
) -> None:
    up, down, mirror_app = pair
    image = make_image("refused", n_layers=2)
    await push_image(up, "lib/app", image, "v1")
    mirrors: Mirrors = mirror_app.state.mirrors
    refuse = Refuse()
    mirrors.admission = refuse

    r = await down.get("/v2/hub/app/manifests/v1")
    assert r.status_code == 403 and code(r) == "DENIED"
    assert message(r) == "no signature by a trusted key"
    ((name, reference, record, source),) = refuse.calls
    assert (name, reference, source.repository) == ("hub/app", "v1", "lib/app")
    assert str(record.digest) == image.digest and record.content == image.manifest
    assert refuse.fetched == image.manifest

    registry = mirror_app.state.registry
    assert await registry.metadata.get_manifest("hub/app", "v1") is None
    assert not await registry.metadata.repository_exists("hub/app")
    for blob in image.blobs:
        digest = Digest.of(blob)
        assert await registry.metadata.blob_size("hub/app", digest) is None
        assert await registry.storage.stat(digest) is None
    assert (await down.get("/v2/hub/app/tags/list")).status_code == 404

    # Admitted (the default), the same pull caches the image.
    mirrors.admission = AdmitAll()
    r = await down.get("/v2/hub/app/manifests/v1")
    assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "miss"
    assert r.content == image.manifest


async def test_upstream_404_and_bad_references(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette],
) -> None:
    _, down, _ = pair
    r = await down.get("/v2/hub/none/manifests/v1")
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
    r = await down.get(f"/v2/hub/none/blobs/{Digest.of(b'nothing')}")
    assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN"
    r = await down.get("/v2/hub/none/manifests/bad!tag")
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"


async def test_manifest_answered_before_its_blobs_and_prefetch_fills_them(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette],
) -> None:
    """A manifest miss stores only the manifest; the blobs come with the client's blob GETs,
    or all at once from `prefetch` (which also fills a manifest cached without them)."""
    up, down, mirror_app = pair
    image = make_image("streamed", n_layers=2)
    await push_image(up, "lib/app", image, "v1")
    registry = mirror_app.state.registry
    r = await down.get("/v2/hub/app/manifests/v1")
    assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "miss"
    digests = [Digest.of(b) for b in image.blobs]
    assert [await registry.metadata.blob_size("hub/app", d) for d in digests] == [None] * 3

    r = await down.get(f"/v2/hub/app/blobs/{digests[1]}")
    assert r.status_code == 200 and r.content == image.blobs[1]
    assert r.headers["X-Trustyard-Cache"] == "miss"
    assert await registry.metadata.blob_size("hub/app", digests[1]) == len(image.blobs[1])

    mirrors: Mirrors = mirror_app.state.mirrors
    (record,) = await mirrors.prefetch("hub/app", "v1")
    assert str(record.digest) == image.digest
    for digest, blob in zip(digests, image.blobs, strict=True):
        assert await registry.metadata.blob_size("hub/app", digest) == len(blob)
        r = await down.get(f"/v2/hub/app/blobs/{digest}")
        assert r.headers["X-Trustyard-Cache"] == "hit" and r.content == blob
