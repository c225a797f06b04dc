"""Helpers shared by the real-client interop tests (test_client_*.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.integration.images import OCI_INDEX, OCI_MANIFEST, Image, sha256
from tests.integration.server import ServerProcess

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

ALL_MANIFESTS = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])


def run(
    *cmd: str | Path,
    env: dict[str, str] | None = None,
    timeout: float = 180,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a client command; on failure the assertion shows its stdout and stderr."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )
    if check:
        assert proc.returncode == 0, (
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


@dataclass
class LayoutImage:
    """One image read back from an OCI image layout (`oci:` directory)."""

    manifest_digest: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    config_bytes: bytes

    @property
    def config_digest(self) -> str:
        return str(self.manifest["config"]["digest"])

    @property
    def layer_digests(self) -> list[str]:
        return [layer["digest"] for layer in self.manifest["layers"]]


def layout_blob(layout: Path, digest: str) -> bytes:
    algo, hexpart = digest.split(":", 1)
    data = (layout / "blobs" / algo / hexpart).read_bytes()
    assert sha256(data) == digest, f"blob {digest} in {layout} does not match its digest"
    return data


def read_layout(layout: Path, tag: str) -> LayoutImage:
    """The image tagged `tag` in an OCI layout, with every blob checked against its digest."""
    index = json.loads((layout / "index.json").read_text())
    entries = [
        m
        for m in index["manifests"]
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == tag
    ]
    assert len(entries) == 1, f"tag {tag} not (uniquely) in {layout}: {index}"
    digest = entries[0]["digest"]
    raw = layout_blob(layout, digest)
    manifest = json.loads(raw)
    config = layout_blob(layout, manifest["config"]["digest"])
    for layer in manifest["layers"]:
        assert len(layout_blob(layout, layer["digest"])) == layer["size"]
    return LayoutImage(digest, manifest, raw, config)


def write_index_layout(path: Path, tag: str, images: list[tuple[Image, str]]) -> tuple[Path, bytes]:
    """An OCI layout whose tag `tag` points at a multi-platform index of `images`."""
    from tests.integration.images import make_index, write_layout

    write_layout(path, {f"_{arch}": img for img, arch in images})
    index = make_index(images)
    (path / "blobs" / "sha256" / sha256(index).split(":")[1]).write_bytes(index)
    (path / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": OCI_INDEX,
                        "digest": sha256(index),
                        "size": len(index),
                        "annotations": {"org.opencontainers.image.ref.name": tag},
                    }
                ],
            }
        )
    )
    return path, index


_REQUEST_LINE = re.compile(r"^\{.*\"event\": \"request\".*\}$")


def request_log(server: ServerProcess) -> list[dict[str, Any]]:
    """The server's structured request log lines (method, path, status), oldest first."""
    assert server.log_path is not None
    lines = server.log_path.read_text(errors="replace").splitlines()
    out = []
    for line in lines:
        if _REQUEST_LINE.match(line):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out
