"""Manifests in-process: PUT by tag and digest, negotiation, conditional GETs, bad input."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.inprocess.helpers import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    OCI_INDEX,
    OCI_MANIFEST,
    code,
    dumps,
    make_image,
    make_index,
    make_referrer,
    message,
    push_blob,
    push_image,
    put_manifest,
    referrer_blobs,
    sha256,
)

MiB = 1024 * 1024


async def test_put_by_tag_and_get(client: httpx.AsyncClient) -> None:
    image = make_image("tag")
    for blob in image.blobs:
        await push_blob(client, "app", blob)
    r = await put_manifest(client, "app", "v1", image.manifest, OCI_MANIFEST)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/app/manifests/{image.digest}"
    assert r.headers["Docker-Content-Digest"] == image.digest
    assert "OCI-Subject" not in r.headers and "OCI-Tag" not in r.headers
    for ref in ("v1", image.digest):
        g = await client.get(f"/v2/app/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert g.status_code == 200
        assert g.content == image.manifest  # the exact bytes pushed
        assert g.headers["Content-Type"] == OCI_MANIFEST
        assert g.headers["Docker-Content-Digest"] == image.digest
        assert g.headers["ETag"] == f'"{image.digest}"'
        assert g.headers["Content-Length"] == str(len(image.manifest))


async def test_put_by_digest(client: httpx.AsyncClient) -> None:
    image = make_image("digest")
    for blob in image.blobs:
        await push_blob(client, "app", blob)
    r = await put_manifest(client, "app", image.digest, image.manifest, OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == image.digest
    tags = await client.get("/v2/app/tags/list")
    assert tags.json() == {"name": "app", "tags": []}
    assert (await client.get(f"/v2/app/manifests/{image.digest}")).content == image.manifest


async def test_put_by_sha512_digest(client: httpx.AsyncClient) -> None:
    """The digest in the URL picks the algorithm; the manifest is then addressed by it."""
    image = make_image("sha512")
    for blob in image.blobs:
        await push_blob(client, "app", blob)
    digest = "sha512:" + hashlib.sha512(image.manifest).hexdigest()
    r = await put_manifest(client, "app", digest, image.manifest, OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"] == f"/v2/app/manifests/{digest}"
    g = await client.get(f"/v2/app/manifests/{digest}")
    assert g.status_code == 200 and g.content == image.manifest
    assert g.headers["Docker-Content-Digest"] == digest
    wrong = "sha512:" + hashlib.sha512(b"other").hexdigest()
    r = await put_manifest(client, "app", wrong, image.manifest, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"


async def test_put_by_wrong_digest_is_400(client: httpx.AsyncClient) -> None:
    image = make_image("wrong")
    for blob in image.blobs:
        await push_blob(client, "app", blob)
    wrong = sha256(b"something else")
    r = await put_manifest(client, "app", wrong, image.manifest, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"
    assert r.json()["errors"][0]["detail"] == {"expected": wrong, "actual": image.digest}
    assert (await client.head(f"/v2/app/manifests/{image.digest}")).status_code == 404


async def test_docker_schema2_and_manifest_list(client: httpx.AsyncClient) -> None:
    amd, arm = make_image("d1", docker=True), make_image("d2", docker=True, arch="arm64")
    await push_image(client, "dk", amd, amd.digest)
    await push_image(client, "dk", arm, arm.digest)
    index = make_index(amd, arm, docker=True)
    r = await put_manifest(client, "dk", "multi", index, DOCKER_LIST)
    assert r.status_code == 201 and r.headers["Docker-Content-Digest"] == sha256(index)
    g = await client.get("/v2/dk/manifests/multi", headers={"Accept": DOCKER_LIST})
    assert g.headers["Content-Type"] == DOCKER_LIST and g.content == index
    g = await client.get(f"/v2/dk/manifests/{amd.digest}", headers={"Accept": DOCKER_MANIFEST})
    assert g.headers["Content-Type"] == DOCKER_MANIFEST and g.content == amd.manifest


async def test_oci_index(client: httpx.AsyncClient) -> None:
    amd, arm = make_image("i1"), make_image("i2", arch="arm64")
    await push_image(client, "ix", amd, "amd")
    await push_image(client, "ix", arm, "arm")
    index = make_index(amd, arm)
    r = await put_manifest(client, "ix", "latest", index, OCI_INDEX)
    assert r.status_code == 201
    g = await client.get("/v2/ix/manifests/latest", headers={"Accept": OCI_INDEX})
    assert g.status_code == 200 and g.content == index
    assert g.headers["Content-Type"] == OCI_INDEX


async def test_media_type_from_body_when_content_type_is_generic(
    client: httpx.AsyncClient,
) -> None:
    image = make_image("generic")
    for blob in image.blobs:
        await push_blob(client, "g", blob)
    r = await put_manifest(client, "g", "v1", image.manifest, "application/json")
    assert r.status_code == 201
    g = await client.get("/v2/g/manifests/v1")
    assert g.headers["Content-Type"] == OCI_MANIFEST


async def test_content_type_disagreeing_with_body_is_400(client: httpx.AsyncClient) -> None:
    image = make_image("mismatch")
    for blob in image.blobs:
        await push_blob(client, "g", blob)
    r = await put_manifest(client, "g", "v1", image.manifest, DOCKER_MANIFEST)
    assert r.status_code == 400 and code(r) == "MANIFEST_INVALID"
    assert "does not match" in message(r)


async def test_several_tags_in_one_put(client: httpx.AsyncClient) -> None:
    image = make_image("multi-tag")
    for blob in image.blobs:
        await push_blob(client, "mt", blob)
    r = await client.put(
        f"/v2/mt/manifests/{image.digest}?tag=a&tag=b&tag=c",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201
    assert r.headers.get_list("OCI-Tag") == ["a", "b", "c"]
    assert (await client.get("/v2/mt/tags/list")).json()["tags"] == ["a", "b", "c"]
    for tag in ("a", "b", "c"):
        g = await client.head(f"/v2/mt/manifests/{tag}")
        assert g.headers["Docker-Content-Digest"] == image.digest


async def test_tag_in_path_and_query(client: httpx.AsyncClient) -> None:
    image = make_image("both")
    for blob in image.blobs:
        await push_blob(client, "mt", blob)
    r = await client.put(
        "/v2/mt/manifests/main?tag=extra&tag=main",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201
    assert (await client.get("/v2/mt/tags/list")).json()["tags"] == ["extra", "main"]


@pytest.mark.parametrize("bad", ["-dash", ".dot", "x" * 129, "with space", "a/b", ""])
async def test_invalid_extra_tag_is_400_and_stores_nothing(
    client: httpx.AsyncClient, bad: str
) -> None:
    image = make_image("bad-tag")
    for blob in image.blobs:
        await push_blob(client, "mt", blob)
    r = await client.put(
        f"/v2/mt/manifests/{image.digest}",
        params=[("tag", "good"), ("tag", bad)],
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400 and code(r) == "MANIFEST_INVALID"
    assert (await client.head(f"/v2/mt/manifests/{image.digest}")).status_code == 404
    assert (await client.head("/v2/mt/manifests/good")).status_code == 404


# -- negotiation and conditional requests ----------------------------------------------------
@pytest.mark.parametrize(
    "accept",
    [
        [OCI_MANIFEST],
        [f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"],
        [DOCKER_MANIFEST, OCI_MANIFEST],  # two Accept headers
        [f"{OCI_MANIFEST};q=0.9"],
        ["*/*"],
        ["application/*"],
        [],
    ],
)
async def test_accept_that_includes_the_type(client: httpx.AsyncClient, accept: list[str]) -> None:
    image = make_image("acc")
    await push_image(client, "n", image, "v1")
    r = await client.get("/v2/n/manifests/v1", headers=[("Accept", value) for value in accept])
    assert r.status_code == 200 and r.content == image.manifest


@pytest.mark.parametrize("accept", [DOCKER_MANIFEST, "text/html", DOCKER_SCHEMA1])
async def test_accept_that_excludes_the_type_is_404(client: httpx.AsyncClient, accept: str) -> None:
    image = make_image("acc")
    await push_image(client, "n", image, "v1")
    r = await client.get("/v2/n/manifests/v1", headers={"Accept": accept})
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
    assert "Accept" in message(r)


async def test_index_to_a_client_without_index_support(client: httpx.AsyncClient) -> None:
    """As Distribution does: the linux/amd64 image of an index, when its type is accepted."""
    arm, amd = make_image("arm", arch="arm64"), make_image("amd")
    await push_image(client, "mp", arm, "arm")
    await push_image(client, "mp", amd, "amd")
    await put_manifest(client, "mp", "latest", make_index(arm, amd), OCI_INDEX)
    r = await client.get("/v2/mp/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200 and r.content == amd.manifest
    assert r.headers["Docker-Content-Digest"] == amd.digest
    r = await client.get("/v2/mp/manifests/latest", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
    assert "linux/amd64" in message(r)


async def test_index_without_amd64_to_a_client_without_index_support(
    client: httpx.AsyncClient,
) -> None:
    arm = make_image("arm", arch="arm64")
    await push_image(client, "mp", arm, "arm")
    await put_manifest(client, "mp", "latest", make_index(arm), OCI_INDEX)
    r = await client.get("/v2/mp/manifests/latest", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"


async def test_etag_and_if_none_match(client: httpx.AsyncClient) -> None:
    image = make_image("etag")
    await push_image(client, "e", image, "v1")
    etag = f'"{image.digest}"'
    for method in ("GET", "HEAD"):
        r = await client.request(method, "/v2/e/manifests/v1", headers={"If-None-Match": etag})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["ETag"] == etag and r.headers["Docker-Content-Digest"] == image.digest
    r = await client.get("/v2/e/manifests/v1", headers={"If-None-Match": f'"x", {etag}'})
    assert r.status_code == 304
    r = await client.get("/v2/e/manifests/v1", headers={"If-None-Match": '"sha256:stale"'})
    assert r.status_code == 200 and r.content == image.manifest


async def test_head(client: httpx.AsyncClient) -> None:
    image = make_image("head")
    await push_image(client, "h", image, "v1")
    r = await client.head("/v2/h/manifests/v1")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Docker-Content-Digest"] == image.digest
    assert r.headers["Content-Length"] == str(len(image.manifest))
    assert r.headers["Content-Type"] == OCI_MANIFEST
    r = await client.head("/v2/h/manifests/v2")
    assert r.status_code == 404 and r.content == b""


async def test_unknown_manifest_and_unknown_repository(client: httpx.AsyncClient) -> None:
    await push_image(client, "known", make_image("k"), "v1")
    r = await client.get("/v2/known/manifests/v2")
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
    r = await client.get(f"/v2/known/manifests/{sha256(b'x')}")
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
    r = await client.get("/v2/unknown/manifests/v1")
    assert r.status_code == 404 and code(r) == "NAME_UNKNOWN"


# -- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (DOCKER_SCHEMA1, {"schemaVersion": 1, "name": "s1", "tag": "v1", "fsLayers": []}),
        (DOCKER_SCHEMA1_SIGNED, {"schemaVersion": 1, "name": "s1", "tag": "v1", "fsLayers": []}),
        ("application/json", {"schemaVersion": 1, "name": "s1", "tag": "v1", "fsLayers": []}),
        (OCI_MANIFEST, {"schemaVersion": 1, "mediaType": DOCKER_SCHEMA1}),
    ],
)
async def test_schema1_is_refused(
    client: httpx.AsyncClient, content_type: str, body: dict[str, object]
) -> None:
    r = await put_manifest(client, "s1", "v1", dumps(body), content_type)
    assert r.status_code == 400 and code(r) == "MANIFEST_INVALID"
    assert "schema 1" in message(r) and "v2s2" in message(r)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'"a string"',
        b"\xff\xfe\x00garbage",
        b'{"schemaVersion": 2, "mediaType": "' + OCI_MANIFEST.encode() + b'"}',
        b'{"schemaVersion": 3, "mediaType": "' + OCI_MANIFEST.encode() + b'", "config": {}}',
        b'{"schemaVersion": 2, "mediaType": "application/vnd.unknown+json", "config": {}}',
        b'{"schemaVersion": 2, "mediaType": "' + OCI_INDEX.encode() + b'", "manifests": {}}',
        b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:abc", "size": 1}}',
        b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "'
        + sha256(b"c").encode()
        + b'", "size": -1}}',
        b'{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "'
        + sha256(b"c").encode()
        + b'", "size": true}}',
    ],
)
async def test_bad_manifest_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    r = await put_manifest(client, "bad", "v1", body, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == "MANIFEST_INVALID"
    assert message(r)
    assert (await client.get("/v2/bad/manifests/v1")).status_code == 404


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
async def test_deeply_nested_json_is_400(client: httpx.AsyncClient, depth: int) -> None:
    """Refused before `json.loads` recurses (a RecursionError would be a 500)."""
    body = b'{"schemaVersion":2,"annotations":' + b"[" * depth + b"]" * depth + b"}"
    r = await put_manifest(client, "deep", "v1", body, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == "MANIFEST_INVALID"
    assert "levels deep" in message(r)


async def test_nesting_within_the_bound_is_parsed(client: httpx.AsyncClient) -> None:
    """Depth 64 is allowed through to the manifest checks (here: annotations must be strings)."""
    body = b'{"schemaVersion":2,"config":{},"annotations":' + b"[" * 62 + b"]" * 62 + b"}"
    r = await put_manifest(client, "deep", "v1", body, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == "MANIFEST_INVALID"
    assert "levels deep" not in message(r)


async def test_missing_blob_is_manifest_blob_unknown(client: httpx.AsyncClient) -> None:
    image = make_image("missing", n_layers=2)
    await push_blob(client, "mb", image.config)
    await push_blob(client, "mb", image.layers[0])
    r = await put_manifest(client, "mb", "v1", image.manifest, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"] == {"digest": sha256(image.layers[1])}
    assert "push the blob first" in message(r)
    r = await client.get("/v2/mb/manifests/v1")
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"


async def test_blob_in_another_repository_does_not_count(client: httpx.AsyncClient) -> None:
    image = make_image("elsewhere")
    await push_image(client, "has", image, "v1")
    r = await put_manifest(client, "hasnt", "v1", image.manifest, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == "MANIFEST_BLOB_UNKNOWN"


async def test_index_with_missing_child_is_manifest_blob_unknown(
    client: httpx.AsyncClient,
) -> None:
    pushed, missing = make_image("p"), make_image("m", arch="arm64")
    await push_image(client, "im", pushed, "p")
    r = await put_manifest(client, "im", "idx", make_index(pushed, missing), OCI_INDEX)
    assert r.status_code == 400 and code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"] == {"digest": missing.digest}


@pytest.mark.parametrize(
    "reference",
    ["-bad", ".bad", "x" * 129, "sha256:short", "md5:" + "a" * 32, "sha256:" + "A" * 64, "a%20b"],
)
async def test_invalid_reference_on_read_is_manifest_unknown(
    client: httpx.AsyncClient, reference: str
) -> None:
    await push_image(client, "ref", make_image("ref"), "v1")
    for method in ("GET", "DELETE"):
        r = await client.request(method, f"/v2/ref/manifests/{reference}")
        assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN", method
        assert r.json()["errors"][0]["detail"]["reference"]
    r = await client.head(f"/v2/ref/manifests/{reference}")
    assert r.status_code == 404 and r.content == b""


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("-bad", "MANIFEST_INVALID"),
        ("x" * 129, "MANIFEST_INVALID"),
        ("a%20b", "MANIFEST_INVALID"),
        ("sha256:short", "DIGEST_INVALID"),
        ("md5:" + "a" * 32, "DIGEST_INVALID"),
    ],
)
async def test_invalid_reference_on_put_is_400(
    client: httpx.AsyncClient, reference: str, expected: str
) -> None:
    image = make_image("ref")
    for blob in image.blobs:
        await push_blob(client, "ref", blob)
    r = await put_manifest(client, "ref", reference, image.manifest, OCI_MANIFEST)
    assert r.status_code == 400 and code(r) == expected
    assert (await client.head(f"/v2/ref/manifests/{image.digest}")).status_code == 404


async def test_manifest_of_4_mib_is_accepted(client: httpx.AsyncClient) -> None:
    """The spec asks registries to accept manifests of at least 4 MB (our limit is 4 MiB)."""
    image = make_image("big")
    for blob in image.blobs:
        await push_blob(client, "big", blob)
    body = json.loads(image.manifest)
    body["annotations"] = {"pad": ""}
    padding = 4 * MiB - len(dumps(body))
    body["annotations"]["pad"] = "x" * padding
    data = dumps(body)
    assert len(data) == 4 * MiB
    r = await put_manifest(client, "big", "v1", data, OCI_MANIFEST)
    assert r.status_code == 201
    assert (await client.get("/v2/big/manifests/v1")).content == data


async def test_oversize_manifest_is_413(client: httpx.AsyncClient) -> None:
    data = b"{" + b" " * (4 * MiB) + b"}"
    r = await put_manifest(client, "big", "v1", data, OCI_MANIFEST)
    assert r.status_code == 413 and code(r) == "SIZE_INVALID"
    assert "larger than the limit of 4194304 bytes" in message(r)
    assert str(len(data)) in message(r)  # the declared length is named


async def test_oversize_with_expect_continue_is_413_at_once(client: httpx.AsyncClient) -> None:
    data = b"{" + b" " * (4 * MiB) + b"}"
    r = await client.put(
        "/v2/big/manifests/v1",
        content=data,
        headers={"Content-Type": OCI_MANIFEST, "Expect": "100-continue"},
    )
    assert r.status_code == 413 and code(r) == "SIZE_INVALID"
    assert r.headers["Connection"] == "close"


async def test_oversize_streamed_without_length_is_413(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b" " * MiB

    r = await client.put(
        "/v2/big/manifests/v1", content=body(), headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 413 and code(r) == "SIZE_INVALID"
    assert (await client.get("/v2/big/manifests/v1")).status_code == 404


# -- subject and deletes ---------------------------------------------------------------------
async def test_subject_is_answered_with_oci_subject(client: httpx.AsyncClient) -> None:
    image = make_image("subj")
    await push_image(client, "s", image, "v1")
    referrer = make_referrer(image.manifest, "application/vnd.example.sig")
    for blob in referrer_blobs():
        await push_blob(client, "s", blob)
    r = await put_manifest(client, "s", sha256(referrer), referrer, OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == image.digest
    g = await client.get(f"/v2/s/manifests/{sha256(referrer)}")
    assert g.headers["OCI-Subject"] == image.digest
    h = await client.head(f"/v2/s/manifests/{sha256(referrer)}")
    assert h.headers["OCI-Subject"] == image.digest


async def test_subject_may_be_pushed_before_it_exists(client: httpx.AsyncClient) -> None:
    absent = make_image("later")
    referrer = make_referrer(absent.manifest, "application/vnd.example.sig")
    for blob in referrer_blobs():
        await push_blob(client, "s", blob)
    r = await put_manifest(client, "s", sha256(referrer), referrer, OCI_MANIFEST)
    assert r.status_code == 201 and r.headers["OCI-Subject"] == absent.digest


async def test_delete_by_tag_and_by_digest(client: httpx.AsyncClient) -> None:
    image = make_image("del")
    await push_image(client, "d", image, "v1")
    await put_manifest(client, "d", "v2", image.manifest, OCI_MANIFEST)
    r = await client.delete("/v2/d/manifests/v1")
    assert r.status_code == 202
    r = await client.get("/v2/d/manifests/v1")
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
    assert (await client.get("/v2/d/manifests/v2")).status_code == 200
    assert (await client.delete(f"/v2/d/manifests/{image.digest}")).status_code == 202
    for ref in ("v2", image.digest):
        r = await client.get(f"/v2/d/manifests/{ref}")
        assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
    r = await client.delete(f"/v2/d/manifests/{image.digest}")
    assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
