"""The docker CLI without an engine (`docker manifest …`) against a real `trustyard serve`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.clienttools import (
    ALL_MANIFESTS,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    run,
    write_index_layout,
)
from tests.integration.conftest import require
from tests.integration.images import (
    OCI_INDEX,
    make_image,
    make_index,
    push_image,
    sha256,
    write_layout,
)
from tests.integration.server import ServerProcess

Docker = Callable[..., Any]


@pytest.fixture
def docker(tmp_path: Path) -> Docker:
    """`docker` with a private, empty DOCKER_CONFIG (no credentials, no manifest cache)."""
    exe = require("docker")
    config = tmp_path / "docker-config"
    config.mkdir()

    def call(*args: str, check: bool = True) -> Any:
        return run(exe, *args, env={"DOCKER_CONFIG": str(config)}, check=check)

    return call


def served(server: ServerProcess, repo: str, ref: str) -> httpx.Response:
    r = httpx.get(
        f"{server.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": ALL_MANIFESTS},
        timeout=30,
        follow_redirects=True,
    )
    assert r.status_code == 200, r.text
    return r


def test_manifest_inspect_oci_image(docker: Docker, shared_server: ServerProcess) -> None:
    image = make_image(2, seed="docker-oci")
    with httpx.Client(base_url=shared_server.url, timeout=30, follow_redirects=True) as c:
        push_image(c, "docker/oci", image, "v1")

    out = docker("manifest", "inspect", "--insecure", f"{shared_server.host}/docker/oci:v1")

    assert json.loads(out.stdout) == json.loads(image.manifest)
    by_digest = docker(
        "manifest", "inspect", "--insecure", f"{shared_server.host}/docker/oci@{image.digest}"
    )
    assert json.loads(by_digest.stdout) == json.loads(image.manifest)


@pytest.mark.needs_skopeo
def test_manifest_inspect_docker_schema2(
    docker: Docker, shared_server: ServerProcess, tmp_path: Path
) -> None:
    image = make_image(1, seed="docker-v2s2")
    layout = write_layout(tmp_path / "src", {"v1": image})
    ref = f"{shared_server.host}/docker/v2s2:v1"
    run(
        require("skopeo"), "copy", "--dest-tls-verify=false", "--format", "v2s2",
        f"oci:{layout}:v1", f"docker://{ref}",
    )  # fmt: skip

    out = json.loads(docker("manifest", "inspect", "--insecure", ref).stdout)

    assert out == served(shared_server, "docker/v2s2", "v1").json()
    assert out["mediaType"] == DOCKER_MANIFEST
    assert out["config"]["digest"] == sha256(image.config)


def test_manifest_inspect_multi_arch_index(
    docker: Docker, shared_server: ServerProcess, tmp_path: Path
) -> None:
    amd64 = make_image(1, seed="docker-amd64", arch="amd64")
    arm64 = make_image(1, seed="docker-arm64", arch="arm64")
    with httpx.Client(base_url=shared_server.url, timeout=30, follow_redirects=True) as c:
        push_image(c, "docker/multi", amd64)
        push_image(c, "docker/multi", arm64)
        index = make_index([(amd64, "amd64"), (arm64, "arm64")])
        r = c.put(
            "/v2/docker/multi/manifests/v1", content=index, headers={"Content-Type": OCI_INDEX}
        )
        assert r.status_code == 201, r.text
    ref = f"{shared_server.host}/docker/multi:v1"

    out = json.loads(docker("manifest", "inspect", "--insecure", ref).stdout)
    assert out == json.loads(index)

    verbose = json.loads(docker("manifest", "inspect", "--verbose", "--insecure", ref).stdout)
    assert [entry["Descriptor"]["digest"] for entry in verbose] == [amd64.digest, arm64.digest]
    assert [entry["Descriptor"]["platform"]["architecture"] for entry in verbose] == [
        "amd64",
        "arm64",
    ]
    for entry, img in zip(verbose, (amd64, arm64), strict=True):
        assert entry["OCIManifest"]["config"]["digest"] == sha256(img.config)
        assert entry["Ref"].endswith(f"@{img.digest}")


@pytest.mark.needs_skopeo
def test_manifest_create_and_push_a_list(
    docker: Docker, shared_server: ServerProcess, tmp_path: Path
) -> None:
    """`docker manifest push` mounts blobs from the source repos and PUTs children by digest."""
    host = shared_server.host
    images = {
        "amd64": make_image(1, seed="docker-list-amd64", arch="amd64"),
        "arm64": make_image(1, seed="docker-list-arm64", arch="arm64"),
    }
    for arch, image in images.items():
        layout = write_layout(tmp_path / arch, {"v1": image})
        run(
            require("skopeo"), "copy", "--dest-tls-verify=false", "--format", "v2s2",
            f"oci:{layout}:v1", f"docker://{host}/docker/list-{arch}:v1",
        )  # fmt: skip

    docker(
        "manifest", "create", "--insecure", f"{host}/docker/list:v1",
        f"{host}/docker/list-amd64:v1", f"{host}/docker/list-arm64:v1",
    )  # fmt: skip
    pushed = docker("manifest", "push", "--insecure", f"{host}/docker/list:v1")

    r = served(shared_server, "docker/list", "v1")
    assert r.headers["content-type"] == DOCKER_MANIFEST_LIST
    assert sha256(r.content) in pushed.stdout
    listed = r.json()
    assert listed["mediaType"] == DOCKER_MANIFEST_LIST
    assert {m["platform"]["architecture"] for m in listed["manifests"]} == set(images)
    for entry in listed["manifests"]:
        child = served(shared_server, "docker/list", entry["digest"])
        assert len(child.content) == entry["size"]
        config_digest = child.json()["config"]["digest"]
        assert config_digest == sha256(images[entry["platform"]["architecture"]].config)
        blob = httpx.head(
            f"{shared_server.url}/v2/docker/list/blobs/{config_digest}",
            timeout=30,
            follow_redirects=True,
        )
        assert blob.status_code == 200

    out = json.loads(docker("manifest", "inspect", "--insecure", f"{host}/docker/list:v1").stdout)
    assert out == listed


def test_manifest_inspect_unknown(docker: Docker, shared_server: ServerProcess) -> None:
    missing = docker(
        "manifest", "inspect", "--insecure", f"{shared_server.host}/docker/nothing:v1", check=False
    )
    assert missing.returncode != 0
    assert "no such manifest" in (missing.stdout + missing.stderr).lower()


@pytest.mark.needs_skopeo
def test_manifest_inspect_index_pushed_by_skopeo(
    docker: Docker, shared_server: ServerProcess, tmp_path: Path
) -> None:
    amd64 = make_image(1, seed="docker-sk-amd64", arch="amd64")
    arm64 = make_image(1, seed="docker-sk-arm64", arch="arm64")
    layout, index = write_index_layout(tmp_path / "src", "m", [(amd64, "amd64"), (arm64, "arm64")])
    ref = f"{shared_server.host}/docker/sk-multi:v1"
    run(
        require("skopeo"),
        "copy",
        "--all",
        "--dest-tls-verify=false",
        f"oci:{layout}:m",
        f"docker://{ref}",
    )

    out = json.loads(docker("manifest", "inspect", "--insecure", ref).stdout)

    assert out == json.loads(index)
    assert out["mediaType"] == OCI_INDEX
