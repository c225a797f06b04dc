"""Build small OCI images by hand (no engine) and push them over the HTTP API."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import httpx

from tests.images import OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST, Image, sha256


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A gzipped tar layer with the given files (deterministic bytes)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_image(
    n_layers: int = 2,
    *,
    seed: str = "x",
    arch: str = "amd64",
    extra: dict[str, Any] | None = None,
    layer_size: int = 64,
    history: bool = False,
) -> Image:
    """An OCI image whose layers are real tar.gz files with seed-dependent content.

    `history`: one config history entry per layer, which converting to schema 1 needs."""
    layers = [
        layer_tar({f"file-{seed}-{i}.txt": (f"{seed}-{i}-".encode() + os.urandom(layer_size))})
        for i in range(n_layers)
    ]
    diff_ids = [sha256(gzip.decompress(layer)) for layer in layers]
    config_body: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "config": {"Cmd": ["/bin/sh"]},
    }
    if history:
        config_body["history"] = [
            {"created": "2026-01-01T00:00:00Z", "created_by": f"layer {i}"} for i in range(n_layers)
        ]
    config = json.dumps(config_body, sort_keys=True).encode()
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": sha256(b), "size": len(b)} for b in layers],
    }
    body.update(extra or {})
    return Image(config, layers, json.dumps(body, indent=2).encode())


def make_index(images: list[tuple[Image, str]]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": img.digest,
                    "size": len(img.manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                }
                for img, arch in images
            ],
        }
    ).encode()


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    digest = sha256(data)
    r = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return digest


def push_image(client: httpx.Client, repo: str, image: Image, ref: str | None = None) -> str:
    for blob in image.blobs:
        push_blob(client, repo, blob)
    r = client.put(
        f"/v2/{repo}/manifests/{ref or image.digest}",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, r.text
    return image.digest


def write_layout(path: Path, images: dict[str, Image]) -> Path:
    """An OCI image layout with each image tagged (index.json annotations ref.name)."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    entries = []
    for tag, image in images.items():
        for data in [*image.blobs, image.manifest]:
            (blobs / sha256(data).split(":")[1]).write_bytes(data)
        entries.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        )
    (path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": entries}))
    return path
