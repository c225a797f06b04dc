"""Schema 1 pushes through the app (ASGI): refused by default; with `schema1 = "verify"` stored
and served byte for byte under Distribution's digest, and every bad push refused with its code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.inprocess.conftest import fresh_data_dir, make_settings, serve
from tests.inprocess.helpers import code, message, push_blob, put_manifest
from tests.jws_sign import manifest_body, p256, sign_pretty
from trustyard.oci import mediatypes as mt
from trustyard.oci import schema1
from trustyard.registry.gc import collect_garbage
from trustyard.registry.scrub import ScrubOptions, scrub
from trustyard.signing.cosign import public_pem
from trustyard.wiring import open_services

NAME = "team/old"
LAYERS = [b"layer one", b"layer two"]


@pytest.fixture
async def verifying(tmp_path: Path, migrated_database: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(fresh_data_dir(tmp_path / "data", migrated_database), schema1="verify")
    async with serve(settings) as c:
        yield c


async def push_signed(client: httpx.AsyncClient, name: str = NAME) -> tuple[bytes, str]:
    sums = [await push_blob(client, name, b) for b in LAYERS]
    raw = sign_pretty(manifest_body(name, sums), [p256()])
    return raw, str(schema1.parse(raw).digest)


async def test_refused_by_default(client: httpx.AsyncClient) -> None:
    sums = [await push_blob(client, NAME, b) for b in LAYERS]
    raw = sign_pretty(manifest_body(NAME, sums), [p256()])
    r = await put_manifest(client, NAME, "v1", raw, mt.DOCKER_SCHEMA1_SIGNED)
    assert (r.status_code, code(r)) == (400, "MANIFEST_INVALID")
    assert "schema1 setting is 'refuse'" in message(r)


async def test_push_and_pull_exact_bytes(verifying: httpx.AsyncClient) -> None:
    raw, digest = await push_signed(verifying)
    r = await put_manifest(verifying, NAME, "v1", raw, mt.DOCKER_SCHEMA1_SIGNED)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"].endswith(f"/manifests/{digest}")
    for ref in ("v1", digest):
        got = await verifying.get(
            f"/v2/{NAME}/manifests/{ref}", headers={"Accept": mt.DOCKER_SCHEMA1_SIGNED}
        )
        assert got.status_code == 200
        assert got.content == raw
        assert got.headers["Content-Type"] == mt.DOCKER_SCHEMA1_SIGNED
        assert got.headers["Docker-Content-Digest"] == digest
    # a client that only reads schema 2 / OCI is told why, not handed schema 1
    r = await verifying.get(f"/v2/{NAME}/manifests/v1", headers={"Accept": mt.OCI_MANIFEST})
    assert code(r) == "MANIFEST_UNKNOWN"


async def test_put_by_digest(verifying: httpx.AsyncClient) -> None:
    raw, digest = await push_signed(verifying)
    bytes_digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    r = await put_manifest(verifying, NAME, bytes_digest, raw, mt.DOCKER_SCHEMA1_SIGNED)
    assert code(r) == "DIGEST_INVALID" and digest in message(r)
    r = await put_manifest(verifying, NAME, digest, raw, mt.DOCKER_SCHEMA1_SIGNED)
    assert r.status_code == 201, r.text


async def test_tampered_is_unverified_and_not_stored(verifying: httpx.AsyncClient) -> None:
    raw, _ = await push_signed(verifying)
    r = await put_manifest(
        verifying, NAME, "v1", raw.replace(b'"amd64"', b'"arm64"'), mt.DOCKER_SCHEMA1_SIGNED
    )
    assert (r.status_code, code(r)) == (400, "MANIFEST_UNVERIFIED")
    assert "does not verify" in message(r)
    assert (await verifying.get(f"/v2/{NAME}/manifests/v1")).status_code == 404


async def test_unsigned_is_unverified(verifying: httpx.AsyncClient) -> None:
    sums = [await push_blob(verifying, NAME, b) for b in LAYERS]
    raw = json.dumps(manifest_body(NAME, sums)).encode()
    r = await put_manifest(verifying, NAME, "v1", raw, mt.DOCKER_SCHEMA1)
    assert code(r) == "MANIFEST_UNVERIFIED" and "not signed" in message(r)


async def test_name_must_match(verifying: httpx.AsyncClient) -> None:
    raw, _ = await push_signed(verifying)
    await push_blob(verifying, "team/other", LAYERS[0])
    await push_blob(verifying, "team/other", LAYERS[1])
    r = await put_manifest(verifying, "team/other", "v1", raw, mt.DOCKER_SCHEMA1_SIGNED)
    assert code(r) == "NAME_INVALID" and "'team/old'" in message(r)


async def test_missing_layer(verifying: httpx.AsyncClient) -> None:
    present = await push_blob(verifying, NAME, LAYERS[0])
    missing = "sha256:" + "c" * 64
    raw = sign_pretty(manifest_body(NAME, [present, missing]), [p256()])
    r = await put_manifest(verifying, NAME, "v1", raw, mt.DOCKER_SCHEMA1_SIGNED)
    assert code(r) == "MANIFEST_BLOB_UNKNOWN" and missing in r.text
    assert (await verifying.get(f"/v2/{NAME}/manifests/v1")).status_code == 404


async def test_gc_keeps_layers_and_scrub_accepts(tmp_path: Path, migrated_database: Path) -> None:
    settings = make_settings(fresh_data_dir(tmp_path / "data", migrated_database), schema1="verify")
    async with serve(settings) as c:
        raw, digest = await push_signed(c)
        assert (await put_manifest(c, NAME, "v1", raw, mt.DOCKER_SCHEMA1_SIGNED)).status_code == 201
    services = await open_services(settings)
    try:
        registry = services.registry
        assert registry is not None
        # grace 0: only the tag keeps the manifest, and only the manifest keeps the layers
        report = await collect_garbage(
            registry.storage, registry.metadata, grace_seconds=0, upload_max_age_seconds=3600
        )
        assert report.plan.blobs == [] and report.plan.manifests == []
        checked = await scrub(registry.storage, registry.metadata, ScrubOptions())
        assert checked.ok and checked.manifests_checked == 1, checked
        await registry.delete_manifest(NAME, digest)
        report = await collect_garbage(
            registry.storage, registry.metadata, grace_seconds=0, upload_max_age_seconds=3600
        )
        assert sorted(str(d) for d, _ in report.plan.blobs) == sorted(
            str(d) for d in schema1.parse(raw).blob_sums
        )
    finally:
        await services.close()


async def test_referrers_and_signature_policy(tmp_path: Path, migrated_database: Path) -> None:
    """Readers built for schema 2 meet a schema 1 manifest: clear answers, never a 500."""
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(public_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    policy = {
        "rules": [
            {
                "name": "signed",
                "repositories": ["team/*"],
                "require": {"kind": "cosign", "keys": [str(pub)]},
            },
        ]
    }
    data = fresh_data_dir(tmp_path / "data", migrated_database)
    settings = make_settings(data, schema1="verify", policy=policy)
    async with serve(settings, raise_app_exceptions=False) as c:
        raw, digest = await push_signed(c)
        assert (
            await put_manifest(c, NAME, digest, raw, mt.DOCKER_SCHEMA1_SIGNED)
        ).status_code == 201
        r = await c.get(f"/v2/{NAME}/referrers/{digest}")
        assert r.status_code == 200 and r.json()["manifests"] == []
        r = await c.get(
            f"/v2/{NAME}/manifests/{digest}", headers={"Accept": mt.DOCKER_SCHEMA1_SIGNED}
        )
        assert r.status_code == 403 and "no cosign signature" in message(r), r.text
