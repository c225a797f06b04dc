"""podman (root, vfs, private storage) against a real `trustyard serve`."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.clienttools import ALL_MANIFESTS, run, write_index_layout
from tests.integration.conftest import require
from tests.integration.images import make_image, sha256, write_layout
from tests.integration.server import ServerProcess

pytestmark = [pytest.mark.needs_podman, pytest.mark.needs_skopeo, pytest.mark.slow]

Podman = Callable[..., str]


@pytest.fixture
def podman(shared_server: ServerProcess, tmp_path: Path) -> Iterator[Podman]:
    """Run podman with its own storage and a registries.conf marking the registry insecure."""
    exe = require("podman")
    # podman refuses a runroot longer than 50 characters: pytest's tmp_path is too long
    runroot = Path(tempfile.mkdtemp(prefix="ty-podman-"))
    conf = tmp_path / "registries.conf"
    conf.write_text(
        "unqualified-search-registries = []\n\n[[registry]]\n"
        f'location = "{shared_server.host}"\ninsecure = true\n'
    )
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "TMPDIR": str(tmp_path)}
    base = [
        "--root", str(tmp_path / "root"),
        "--runroot", str(runroot),
        "--storage-driver", "vfs",
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
    ]  # fmt: skip

    def call(*args: str) -> str:
        return run(exe, *base, *args, env=env).stdout

    yield call
    shutil.rmtree(runroot, ignore_errors=True)


def skopeo_push(layout: Path, tag: str, dest: str, *extra: str) -> None:
    run(require("skopeo"), "copy", "--dest-tls-verify=false", *extra, f"oci:{layout}:{tag}", dest)


def manifest_of(server: ServerProcess, repo: str, ref: str) -> httpx.Response:
    r = httpx.get(
        f"{server.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": ALL_MANIFESTS},
        timeout=30,
        follow_redirects=True,
    )
    assert r.status_code == 200, r.text
    return r


def image_id(podman: Podman, ref: str) -> str:
    return podman("image", "inspect", "--format", "{{.Id}}", ref).strip()


def test_pull_push_pull_keeps_image_id(
    podman: Podman, shared_server: ServerProcess, tmp_path: Path
) -> None:
    image = make_image(2, seed="podman")
    config_hex = sha256(image.config).split(":")[1]
    layout = write_layout(tmp_path / "src", {"v1": image})
    host = shared_server.host
    skopeo_push(layout, "v1", f"docker://{host}/podman/src:v1")

    podman("pull", f"{host}/podman/src:v1")
    assert image_id(podman, f"{host}/podman/src:v1") == config_hex
    digest = podman("image", "inspect", "--format", "{{.Digest}}", f"{host}/podman/src:v1")
    assert digest.strip() == image.digest

    podman("tag", f"{host}/podman/src:v1", f"{host}/podman/dst:v2")
    podman("push", f"{host}/podman/dst:v2")

    pushed = manifest_of(shared_server, "podman/dst", "v2")
    manifest = pushed.json()
    assert manifest["config"]["digest"] == sha256(image.config)
    assert pushed.headers["docker-content-digest"] == sha256(pushed.content)
    config = httpx.get(
        f"{shared_server.url}/v2/podman/dst/blobs/{manifest['config']['digest']}",
        timeout=30,
        follow_redirects=True,
    )
    assert config.status_code == 200
    assert json.loads(config.content)["rootfs"] == json.loads(image.config)["rootfs"]

    podman("rmi", "--all", "--force")
    assert podman("images", "-q").strip() == ""
    podman("pull", f"{host}/podman/dst:v2")
    assert image_id(podman, f"{host}/podman/dst:v2") == config_hex
    assert (
        podman("image", "inspect", "--format", "{{.Digest}}", f"{host}/podman/dst:v2").strip()
        == pushed.headers["docker-content-digest"]
    )


def test_push_v2s2_and_oci_formats(
    podman: Podman, shared_server: ServerProcess, tmp_path: Path
) -> None:
    image = make_image(1, seed="podman-formats")
    layout = write_layout(tmp_path / "src", {"v1": image})
    host = shared_server.host
    skopeo_push(layout, "v1", f"docker://{host}/podman/fmt-src:v1")
    podman("pull", f"{host}/podman/fmt-src:v1")

    expected = {
        "v2s2": "application/vnd.docker.distribution.manifest.v2+json",
        "oci": "application/vnd.oci.image.manifest.v1+json",
    }
    for fmt, media_type in expected.items():
        podman("push", "--format", fmt, f"{host}/podman/fmt-src:v1", f"{host}/podman/fmt-{fmt}:v1")
        r = manifest_of(shared_server, f"podman/fmt-{fmt}", "v1")
        assert r.headers["content-type"] == media_type
        assert r.json()["mediaType"] == media_type
        assert r.json()["config"]["digest"] == sha256(image.config)


def test_pull_one_platform_of_an_index(
    podman: Podman, shared_server: ServerProcess, tmp_path: Path
) -> None:
    amd64 = make_image(1, seed="podman-amd64", arch="amd64")
    arm64 = make_image(1, seed="podman-arm64", arch="arm64")
    layout, _ = write_index_layout(tmp_path / "src", "multi", [(amd64, "amd64"), (arm64, "arm64")])
    host = shared_server.host
    skopeo_push(layout, "multi", f"docker://{host}/podman/multi:v1", "--all")

    podman("pull", "--arch", "arm64", f"{host}/podman/multi:v1")
    assert image_id(podman, f"{host}/podman/multi:v1") == sha256(arm64.config).split(":")[1]
    podman("rmi", "--all", "--force")
    podman("pull", "--arch", "amd64", f"{host}/podman/multi:v1")
    assert image_id(podman, f"{host}/podman/multi:v1") == sha256(amd64.config).split(":")[1]


def test_search_uses_the_catalog(
    podman: Podman, shared_server: ServerProcess, tmp_path: Path
) -> None:
    image = make_image(1, seed="podman-search")
    layout = write_layout(tmp_path / "src", {"v1": image})
    for repo in ("podman/findme-one", "podman/findme-two", "podman/other"):
        skopeo_push(layout, "v1", f"docker://{shared_server.host}/{repo}:v1")

    out = podman(
        "search", "--tls-verify=false", "--format", "{{.Name}}", f"{shared_server.host}/findme"
    )

    assert sorted(out.split()) == [
        f"{shared_server.host}/podman/findme-one",
        f"{shared_server.host}/podman/findme-two",
    ]


def test_manifest_list_built_and_pushed_by_podman(
    podman: Podman, shared_server: ServerProcess, tmp_path: Path
) -> None:
    amd64 = make_image(1, seed="podman-ml-amd64", arch="amd64")
    arm64 = make_image(1, seed="podman-ml-arm64", arch="arm64")
    layout, _ = write_index_layout(tmp_path / "src", "multi", [(amd64, "amd64"), (arm64, "arm64")])
    host = shared_server.host
    skopeo_push(layout, "multi", f"docker://{host}/podman/ml-src:v1", "--all")

    podman("manifest", "create", f"{host}/podman/ml:v1")
    podman("manifest", "add", "--all", f"{host}/podman/ml:v1", f"docker://{host}/podman/ml-src:v1")
    podman("manifest", "push", "--all", f"{host}/podman/ml:v1", f"docker://{host}/podman/ml:v1")

    r = manifest_of(shared_server, "podman/ml", "v1")
    listed = r.json()
    assert r.headers["content-type"] == listed["mediaType"]
    assert {m["digest"]: m["platform"]["architecture"] for m in listed["manifests"]} == {
        amd64.digest: "amd64",
        arm64.digest: "arm64",
    }
    for img in (amd64, arm64):
        child = manifest_of(shared_server, "podman/ml", img.digest)
        assert child.content == img.manifest
        for blob in img.blobs:
            head = httpx.head(
                f"{shared_server.url}/v2/podman/ml/blobs/{sha256(blob)}",
                timeout=30,
                follow_redirects=True,
            )
            assert head.status_code == 200
            assert int(head.headers["content-length"]) == len(blob)
