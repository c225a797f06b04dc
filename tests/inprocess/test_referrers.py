"""The referrers API in-process: the index it answers, the artifactType filter, fallbacks."""

from __future__ import annotations

import httpx
import pytest

from tests.inprocess.helpers import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    code,
    descriptor,
    dumps,
    make_image,
    make_referrer,
    push_blob,
    push_image,
    put_manifest,
    referrer_blobs,
    sha256,
)

SIG = "application/vnd.example.signature"
SBOM = "application/vnd.example.sbom"


async def _refer(
    client: httpx.AsyncClient, name: str, subject: bytes, kind: str, seed: str
) -> bytes:
    body = make_referrer(subject, kind, seed)
    for blob in referrer_blobs(seed):
        await push_blob(client, name, blob)
    r = await put_manifest(client, name, sha256(body), body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    return body


async def test_referrers_lists_every_referrer(client: httpx.AsyncClient) -> None:
    image = make_image("subject")
    await push_image(client, "ref", image, "v1")
    sig = await _refer(client, "ref", image.manifest, SIG, "s")
    sbom = await _refer(client, "ref", image.manifest, SBOM, "b")
    r = await client.get(f"/v2/ref/referrers/{image.digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    index = r.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert by_digest == {
        sha256(sig): {
            "mediaType": OCI_MANIFEST,
            "digest": sha256(sig),
            "size": len(sig),
            "artifactType": SIG,
            "annotations": {"seed": "s"},
        },
        sha256(sbom): {
            "mediaType": OCI_MANIFEST,
            "digest": sha256(sbom),
            "size": len(sbom),
            "artifactType": SBOM,
            "annotations": {"seed": "b"},
        },
    }


async def test_artifact_type_filter(client: httpx.AsyncClient) -> None:
    image = make_image("subject")
    await push_image(client, "ref", image, "v1")
    sig = await _refer(client, "ref", image.manifest, SIG, "s")
    await _refer(client, "ref", image.manifest, SBOM, "b")
    r = await client.get(f"/v2/ref/referrers/{image.digest}", params={"artifactType": SIG})
    assert r.status_code == 200
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(sig)]
    r = await client.get(
        f"/v2/ref/referrers/{image.digest}", params={"artifactType": "application/none"}
    )
    assert r.status_code == 200 and r.json()["manifests"] == []
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


async def test_empty_artifact_type_is_no_filter(client: httpx.AsyncClient) -> None:
    image = make_image("subject")
    await push_image(client, "ref", image, "v1")
    await _refer(client, "ref", image.manifest, SIG, "s")
    r = await client.get(f"/v2/ref/referrers/{image.digest}?artifactType=")
    assert r.status_code == 200 and len(r.json()["manifests"]) == 1
    assert "OCI-Filters-Applied" not in r.headers


async def test_repeated_artifact_type_is_400(client: httpx.AsyncClient) -> None:
    image = make_image("subject")
    await push_image(client, "ref", image, "v1")
    r = await client.get(f"/v2/ref/referrers/{image.digest}?artifactType=a&artifactType=b")
    assert r.status_code == 400 and code(r) == "UNSUPPORTED"


async def test_no_referrers_is_an_empty_index(client: httpx.AsyncClient) -> None:
    image = make_image("lonely")
    await push_image(client, "ref", image, "v1")
    for digest in (image.digest, sha256(b"not even a manifest")):
        r = await client.get(f"/v2/ref/referrers/{digest}")
        assert r.status_code == 200
        assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


async def test_referrers_of_unknown_repository_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/v2/nowhere/referrers/{sha256(b'x')}")
    assert r.status_code == 404 and code(r) == "NAME_UNKNOWN"


@pytest.mark.parametrize("digest", ["sha256:abc", "latest", "sha256:" + "A" * 64])
async def test_referrers_of_invalid_digest_is_400(client: httpx.AsyncClient, digest: str) -> None:
    await push_image(client, "ref", make_image("x"), "v1")
    r = await client.get(f"/v2/ref/referrers/{digest}")
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"


async def test_referrer_pushed_before_its_subject(client: httpx.AsyncClient) -> None:
    image = make_image("later")
    sig = await _refer(client, "ref", image.manifest, SIG, "s")
    r = await client.get(f"/v2/ref/referrers/{image.digest}")
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(sig)]


async def test_artifact_type_falls_back_to_config_media_type(client: httpx.AsyncClient) -> None:
    image = make_image("subject")
    await push_image(client, "ref", image, "v1")
    config = b'{"kind":"legacy"}'
    await push_blob(client, "ref", config)
    body = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.example.legacy.config", config),
            "layers": [],
            "subject": descriptor(OCI_MANIFEST, image.manifest),
        }
    )
    assert (await put_manifest(client, "ref", "legacy", body, OCI_MANIFEST)).status_code == 201
    r = await client.get(f"/v2/ref/referrers/{image.digest}")
    (entry,) = r.json()["manifests"]
    assert entry["artifactType"] == "application/vnd.example.legacy.config"
    r = await client.get(
        f"/v2/ref/referrers/{image.digest}",
        params={"artifactType": "application/vnd.example.legacy.config"},
    )
    assert len(r.json()["manifests"]) == 1


async def test_tag_schema_index_is_folded_in(client: httpx.AsyncClient) -> None:
    """Entries a client wrote to the `sha256-<hex>` fallback tag appear in the API's answer."""
    image = make_image("subject")
    await push_image(client, "ref", image, "v1")
    old = make_image("old-style", artifactType=SIG)
    await push_image(client, "ref", old, old.digest)
    entry = descriptor(OCI_MANIFEST, old.manifest, artifactType=SIG)
    fallback = dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
    tag = image.digest.replace(":", "-")
    assert (await put_manifest(client, "ref", tag, fallback, OCI_INDEX)).status_code == 201
    new = await _refer(client, "ref", image.manifest, SBOM, "n")
    r = await client.get(f"/v2/ref/referrers/{image.digest}")
    assert {m["digest"] for m in r.json()["manifests"]} == {old.digest, sha256(new)}
    r = await client.get(f"/v2/ref/referrers/{image.digest}", params={"artifactType": SIG})
    assert [m["digest"] for m in r.json()["manifests"]] == [old.digest]
    r = await client.get(f"/v2/ref/referrers/{image.digest}", params={"artifactType": SBOM})
    assert [m["digest"] for m in r.json()["manifests"]] == [sha256(new)]
    assert r.headers["OCI-Filters-Applied"] == "artifactType"


async def test_referrers_are_per_repository(client: httpx.AsyncClient) -> None:
    image = make_image("subject")
    await push_image(client, "one", image, "v1")
    await push_image(client, "two", image, "v1")
    await _refer(client, "one", image.manifest, SIG, "s")
    r = await client.get(f"/v2/two/referrers/{image.digest}")
    assert r.status_code == 200 and r.json()["manifests"] == []


async def test_deleted_referrer_disappears(client: httpx.AsyncClient) -> None:
    image = make_image("subject")
    await push_image(client, "ref", image, "v1")
    sig = await _refer(client, "ref", image.manifest, SIG, "s")
    assert (await client.delete(f"/v2/ref/manifests/{sha256(sig)}")).status_code == 202
    r = await client.get(f"/v2/ref/referrers/{image.digest}")
    assert r.json()["manifests"] == []


async def test_image_config_media_type_is_not_a_filter_match(client: httpx.AsyncClient) -> None:
    """An ordinary image is no referrer: it has no subject, whatever its config type."""
    image = make_image("plain")
    await push_image(client, "ref", image, "v1")
    r = await client.get(f"/v2/ref/referrers/{image.digest}", params={"artifactType": OCI_CONFIG})
    assert r.json()["manifests"] == []
