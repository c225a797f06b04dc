"""Scrub over the real app's own storage and metadata (files + SQLite), while it serves.

A byte flipped on disk is found, quarantined and never served again (GET and HEAD answer 404
BLOB_UNKNOWN, so a client uploads the right bytes again); a re-push heals it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import httpx
from starlette.applications import Starlette

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings, serve
from tests.inprocess.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    code,
    make_image,
    make_index,
    make_referrer,
    push_blob,
    push_image,
    put_manifest,
    referrer_blobs,
    sha256,
)
from tests.services.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from trustyard.config import Settings
from trustyard.http.app import create_app
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import parse_manifest, stored_blobs
from trustyard.registry.scrub import ScrubOptions, ScrubReport, scrub
from trustyard.storage.s3 import S3Storage


async def _scrub(app: Starlette, **options: object) -> ScrubReport:
    registry = app.state.registry
    return await scrub(registry.storage, registry.metadata, ScrubOptions(**options))  # type: ignore[arg-type]


def _blob_file(settings: Settings, digest: str) -> Path:
    hexdigest = digest.split(":")[1]
    return settings.storage_dir / "blobs" / "sha256" / hexdigest[:2] / hexdigest


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


async def test_clean_store_passes(app: Starlette, client: httpx.AsyncClient) -> None:
    image = make_image("clean", n_layers=2)
    await push_image(client, "a/clean", image, "v1")
    report = await _scrub(app)
    assert report.ok, report
    assert (report.repositories, report.manifests_checked, report.blobs_checked) == (1, 1, 3)
    assert report.bytes_checked == sum(len(b) for b in image.blobs)


async def test_flipped_byte_is_quarantined_refused_and_healed_by_a_push(
    app: Starlette, client: httpx.AsyncClient, settings: Settings
) -> None:
    image = make_image("flip", n_layers=2)
    await push_image(client, "a/flip", image, "v1")
    await push_image(client, "b/other", image, "v1")  # same blob in a second repository
    layer = sha256(image.layers[1])
    _flip(_blob_file(settings, layer))

    report = await _scrub(app)
    assert not report.ok and not report.missing and not report.corrupt_manifests
    [bad] = report.corrupt_blobs
    assert str(bad.digest) == layer and bad.quarantined
    assert set(bad.unlinked_from) == {"a/flip", "b/other"}
    assert not _blob_file(settings, layer).exists()
    assert (settings.storage_dir / "quarantine" / "sha256" / layer.split(":")[1]).exists()
    for name in ("a/flip", "b/other"):
        r = await client.get(f"/v2/{name}/blobs/{layer}")
        assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN", r.text
        r = await client.head(f"/v2/{name}/blobs/{layer}")
        assert r.status_code == 404

    # Until a client pushes the layer again, the image is reported broken.
    again = await _scrub(app)
    assert [(m.repository, str(m.digest), m.kind) for m in again.missing] == [
        ("a/flip", layer, "blob"),
        ("b/other", layer, "blob"),
    ]
    assert not again.corrupt_blobs

    await push_image(client, "a/flip", image, "v1")
    await push_image(client, "b/other", image, "v1")
    r = await client.get(f"/v2/a/flip/blobs/{layer}")
    assert r.status_code == 200 and r.content == image.layers[1]
    assert (await _scrub(app)).ok


async def test_missing_layer_and_repository_filter(
    app: Starlette, client: httpx.AsyncClient, settings: Settings
) -> None:
    lost = make_image("lost", n_layers=1)
    kept = make_image("kept", n_layers=1)
    await push_image(client, "team/lost", lost, "v1")
    await push_image(client, "other/kept", kept, "v1")
    _blob_file(settings, sha256(lost.layers[0])).unlink()
    _flip(_blob_file(settings, sha256(kept.layers[0])))

    report = await _scrub(app, repository="team/*")
    assert report.repositories == 1 and report.blobs_checked == 1  # the config only
    assert [(m.repository, m.manifest, str(m.digest), m.kind) for m in report.missing] == [
        ("team/lost", Digest.parse(lost.digest), sha256(lost.layers[0]), "blob content")
    ]
    assert not report.corrupt_blobs  # other/* was not looked at
    assert _blob_file(settings, sha256(kept.layers[0])).exists()


async def test_index_children_referrers_and_corrupt_manifest(
    app: Starlette, client: httpx.AsyncClient, settings: Settings
) -> None:
    amd, arm = make_image("amd", arch="amd64"), make_image("arm", arch="arm64")
    await push_image(client, "multi/app", amd, amd.digest)
    await push_image(client, "multi/app", arm, arm.digest)
    index = make_index(amd, arm)
    assert (await put_manifest(client, "multi/app", "v1", index, OCI_INDEX)).status_code == 201
    for blob in referrer_blobs("sig"):
        await push_blob(client, "multi/app", blob)
    referrer = make_referrer(amd.manifest, "application/example.sig", "sig")
    r = await put_manifest(client, "multi/app", sha256(referrer), referrer, OCI_MANIFEST)
    assert r.status_code == 201
    report = await _scrub(app)
    assert report.ok and report.manifests_checked == 4, report

    with sqlite3.connect(settings.database_path) as db:
        changed = db.execute(
            "UPDATE manifests SET content = ? WHERE digest = ?",
            (arm.manifest + b" ", arm.digest),
        ).rowcount
    assert changed == 1
    report = await _scrub(app)
    assert [(m.repository, str(m.digest)) for m in report.corrupt_manifests] == [
        ("multi/app", arm.digest)
    ]
    assert "stored bytes have digest" in report.corrupt_manifests[0].reason


async def test_an_untagged_manifest_is_reread_too(
    app: Starlette, client: httpx.AsyncClient, settings: Settings
) -> None:
    """Pushed by digest, never tagged: still pullable by digest until GC, so scrub checks it."""
    image = make_image("untagged", n_layers=1)
    await push_image(client, "loose/app", image, image.digest)
    report = await _scrub(app)
    assert report.ok and report.manifests_checked == 1, report

    with sqlite3.connect(settings.database_path) as db:
        db.execute(
            "UPDATE manifests SET content = ? WHERE digest = ?",
            (image.manifest + b" ", image.digest),
        )
    report = await _scrub(app)
    assert [(m.repository, str(m.digest)) for m in report.corrupt_manifests] == [
        ("loose/app", image.digest)
    ]
    _flip(_blob_file(settings, sha256(image.layers[0])))
    report = await _scrub(app)
    assert [str(b.digest) for b in report.corrupt_blobs] == [sha256(image.layers[0])]


async def test_the_server_scrubs_on_a_timer(tmp_path: Path, migrated_database: Path) -> None:
    """`scrub_interval_seconds`: the server's own scheduled scrub quarantines a flipped blob,
    so a pull answers 404 instead of wrong bytes without anyone running `trustyard scrub`."""
    data = fresh_data_dir(tmp_path / "data", migrated_database)
    settings = make_settings(data, scrub_interval_seconds=0.2, scrub_rate_mbps=0)
    image = make_image("timer", n_layers=1)
    layer = sha256(image.layers[0])
    async with serve(settings) as client:
        await push_image(client, "timed/app", image, "v1")
        url = f"/v2/timed/app/blobs/{layer}"
        assert (await client.get(url)).status_code == 200
        _flip(_blob_file(settings, layer))
        status = 200
        for _ in range(100):  # up to ~10 s on a loaded machine; one pass takes milliseconds
            await asyncio.sleep(0.1)
            status = (await client.get(url)).status_code
            if status == 404:
                break
        assert status == 404
        assert (settings.storage_dir / "quarantine" / "sha256" / layer.split(":")[1]).exists()


async def test_scrub_on_s3_storage(
    tmp_path: Path, migrated_database: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    """The same scrub over object storage: the corrupt object moves to quarantine/, a GET
    answers 404 instead of the object's presigned URL, and a re-push heals it."""
    settings = make_settings(
        fresh_data_dir(tmp_path / "data", migrated_database),
        storage_backend="s3",
        s3={
            "bucket": s3_bucket,
            "endpoint_url": s3_server.endpoint,
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
        },
    )
    image = make_image("s3", n_layers=1)
    layer = sha256(image.layers[0])
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            await push_image(client, "s3/app", image, "v1")
            storage = application.state.registry.storage
            assert isinstance(storage, S3Storage)
            s3 = await storage._s3()
            key = storage.blob_key(Digest.parse(layer))
            await s3.put_object(Bucket=s3_bucket, Key=key, Body=b"flipped " + image.layers[0])
            report = await _scrub(application)
            assert [str(b.digest) for b in report.corrupt_blobs] == [layer]
            quarantined = await s3.list_objects_v2(Bucket=s3_bucket, Prefix="quarantine/")
            assert [o["Key"] for o in quarantined["Contents"]] == [
                f"quarantine/sha256/{layer.split(':')[1]}"
            ]
            r = await client.get(f"/v2/s3/app/blobs/{layer}")
            assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN"
            await push_image(client, "s3/app", image, "v1")
            assert (await _scrub(application)).ok


async def test_mirrored_blobs_not_fetched_yet_are_not_missing(app: Starlette) -> None:
    """A mirror stores a manifest before its blobs (fetched when a client asks for them):
    under a mirrored prefix that is no damage; elsewhere the same rows are."""
    image = make_image("mirrored", n_layers=2)
    manifest = parse_manifest(image.manifest, OCI_MANIFEST)
    metadata = app.state.registry.metadata
    for name in ("hub/app", "local/app"):
        await metadata.put_manifest(
            name, manifest, image.manifest, ["v1"], optional_blobs=frozenset(stored_blobs(manifest))
        )
    report = await _scrub(app, mirrored=("hub",))
    assert report.manifests_checked == 2
    assert {(m.repository, m.kind) for m in report.missing} == {("local/app", "blob")}
    assert len(report.missing) == 3  # config + 2 layers
    report = await _scrub(app, mirrored=("hub",), repository="hub/*")
    assert report.ok and report.manifests_checked == 1
    report = await _scrub(app, repository="hub/*")
    assert {(m.repository, m.kind) for m in report.missing} == {("hub/app", "blob")}
