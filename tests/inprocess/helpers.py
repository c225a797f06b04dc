"""Small builders for blobs, images, indexes and referrers, pushed over the in-process API."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Image, sha256

OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"


def code(r: httpx.Response) -> str:
    """The first error code of a spec error body."""
    return str(r.json()["errors"][0]["code"])


def message(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["message"])


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def make_image(
    seed: str = "x",
    *,
    docker: bool = False,
    arch: str = "amd64",
    n_layers: int = 1,
    **extra: Any,
) -> Image:
    """An image manifest (OCI, or Docker schema 2) over small made-up blobs."""
    config = dumps({"architecture": arch, "os": "linux", "seed": seed})
    layers = [f"layer {seed} {i}".encode() for i in range(n_layers)]
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers],
        **extra,
    }
    return Image(config, layers, dumps(body), media_type)


def make_index(*images: Image, docker: bool = False, **extra: Any) -> bytes:
    media_type = DOCKER_LIST if docker else OCI_INDEX
    manifests = [
        descriptor(
            image.media_type,
            image.manifest,
            platform={"os": "linux", "architecture": json.loads(image.config)["architecture"]},
        )
        for image in images
    ]
    return dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": manifests, **extra})


def make_referrer(subject: bytes, artifact_type: str, seed: str = "r") -> bytes:
    """An OCI artifact manifest whose `subject` is the manifest `subject`."""
    payload = f"payload {seed}".encode()
    return dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
            "layers": [descriptor("application/octet-stream", payload)],
            "subject": descriptor(OCI_MANIFEST, subject),
            "annotations": {"seed": seed},
        }
    )


def referrer_blobs(seed: str = "r") -> list[bytes]:
    return [b"{}", f"payload {seed}".encode()]


async def push_blob(client: httpx.AsyncClient, name: str, data: bytes) -> str:
    """Monolithic POST ?digest= (one request)."""
    r = await client.post(
        f"/v2/{name}/blobs/uploads/", params={"digest": sha256(data)}, content=data
    )
    assert r.status_code == 201, r.text
    return sha256(data)


async def put_manifest(
    client: httpx.AsyncClient, name: str, reference: str, body: bytes, media_type: str
) -> httpx.Response:
    return await client.put(
        f"/v2/{name}/manifests/{reference}", content=body, headers={"Content-Type": media_type}
    )


async def push_image(client: httpx.AsyncClient, name: str, image: Image, tag: str) -> str:
    for blob in image.blobs:
        await push_blob(client, name, blob)
    r = await put_manifest(client, name, tag, image.manifest, image.media_type)
    assert r.status_code == 201, r.text
    return image.digest
