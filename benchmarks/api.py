"""Registry API steps shared by the workloads (same requests against both servers)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from benchmarks.http1 import Connection, expect

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(conn: Connection, repo: str, data: bytes, digest: str | None = None) -> str:
    """POST then PUT with the whole body (the monolithic flow both registries support)."""
    digest = digest or sha256(data)
    location = expect(conn.request("POST", f"/v2/{repo}/blobs/uploads/"), 202).location()
    sep = "&" if "?" in location else "?"
    expect(
        conn.request(
            "PUT",
            f"{location}{sep}digest={digest}",
            {"Content-Type": "application/octet-stream"},
            body=data,
        ),
        201,
    )
    return digest


def mount_blob(conn: Connection, repo: str, digest: str, source: str) -> None:
    expect(
        conn.request("POST", f"/v2/{repo}/blobs/uploads/?mount={digest}&from={source}"),
        201,
    )


def put_manifest(conn: Connection, repo: str, reference: str, manifest: bytes) -> None:
    expect(
        conn.request(
            "PUT", f"/v2/{repo}/manifests/{reference}", {"Content-Type": OCI_MANIFEST}, manifest
        ),
        201,
    )


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


@dataclass
class SmallImage:
    config: bytes
    layers: list[bytes]
    manifest: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def small_image(layer_bytes: int, layers: int = 2, seed: str = "") -> SmallImage:
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"bench": seed or os.urandom(8).hex()}},
            "rootfs": {"type": "layers", "diff_ids": []},
        }
    ).encode()
    blobs = [os.urandom(layer_bytes) for _ in range(layers)]
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, b) for b in blobs],
        },
        separators=(",", ":"),
    ).encode()
    return SmallImage(config, blobs, manifest)


def push_image(conn: Connection, repo: str, tag: str, image: SmallImage) -> None:
    for blob in (image.config, *image.layers):
        push_blob(conn, repo, blob)
    put_manifest(conn, repo, tag, image.manifest)
