"""skopeo against a real `trustyard serve`: OCI, Docker schema2, docker-archive, mounts, delete."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest

from tests.integration.clienttools import (
    ALL_MANIFESTS,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    read_layout,
    request_log,
    run,
    write_index_layout,
)
from tests.integration.conftest import require
from tests.integration.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    make_image,
    push_image,
    sha256,
    write_layout,
)
from tests.integration.server import ServerProcess

pytestmark = [pytest.mark.needs_skopeo]


def skopeo(*args: str | Path) -> str:
    return run(require("skopeo"), *args).stdout


def copy(src: str, dest: str, *extra: str) -> None:
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false", *extra, src, dest)


def get_manifest(server: ServerProcess, repo: str, ref: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": ALL_MANIFESTS},
        timeout=30,
        follow_redirects=True,
    )


def test_oci_image_round_trip_keeps_every_digest(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    image = make_image(3, seed="skopeo-oci")
    src = write_layout(tmp_path / "src", {"v1": image})
    ref = f"docker://{shared_server.host}/skopeo/oci:v1"

    copy(f"oci:{src}:v1", ref)

    r = get_manifest(shared_server, "skopeo/oci", "v1")
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_MANIFEST
    assert r.content == image.manifest, "the registry must serve the exact pushed bytes"
    assert r.headers["docker-content-digest"] == image.digest

    inspect = json.loads(skopeo("inspect", "--tls-verify=false", ref))
    assert inspect["Digest"] == image.digest
    assert inspect["Architecture"] == "amd64"
    assert inspect["Layers"] == [sha256(layer) for layer in image.layers]

    copy(ref, f"oci:{tmp_path / 'out'}:pulled")
    out = read_layout(tmp_path / "out", "pulled")
    orig = read_layout(src, "v1")
    assert out.manifest_digest == orig.manifest_digest == image.digest
    assert out.manifest_bytes == image.manifest
    assert out.config_digest == orig.config_digest == sha256(image.config)
    assert out.config_bytes == image.config
    assert out.layer_digests == orig.layer_digests == [sha256(layer) for layer in image.layers]


def test_docker_schema2_push_and_pull(shared_server: ServerProcess, tmp_path: Path) -> None:
    image = make_image(2, seed="skopeo-v2s2")
    src = write_layout(tmp_path / "src", {"v1": image})
    ref = f"docker://{shared_server.host}/skopeo/v2s2:v1"

    copy(f"oci:{src}:v1", ref, "--format", "v2s2")

    r = get_manifest(shared_server, "skopeo/v2s2", "v1")
    assert r.status_code == 200
    assert r.headers["content-type"] == DOCKER_MANIFEST
    pushed = r.json()
    assert pushed["mediaType"] == DOCKER_MANIFEST
    assert pushed["config"]["mediaType"] == DOCKER_CONFIG
    assert pushed["config"]["digest"] == sha256(image.config)
    assert [layer["mediaType"] for layer in pushed["layers"]] == [DOCKER_LAYER] * 2
    assert [layer["digest"] for layer in pushed["layers"]] == [sha256(x) for x in image.layers]
    assert r.headers["docker-content-digest"] == sha256(r.content)

    # `dir:` keeps the manifest as served, so the bytes must round-trip exactly.
    out = tmp_path / "dir"
    copy(ref, f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == r.content
    assert (out / sha256(image.config).split(":")[1]).read_bytes() == image.config
    for layer in image.layers:
        assert (out / sha256(layer).split(":")[1]).read_bytes() == layer

    raw = skopeo("inspect", "--raw", "--tls-verify=false", ref).encode()
    assert raw == r.content


def test_docker_archive_source(shared_server: ServerProcess, tmp_path: Path) -> None:
    image = make_image(2, seed="skopeo-archive")
    src = write_layout(tmp_path / "src", {"v1": image})
    archive = tmp_path / "image.tar"
    skopeo("copy", f"oci:{src}:v1", f"docker-archive:{archive}:skopeo/archive:v1")
    ref = f"docker://{shared_server.host}/skopeo/archive:v1"

    copy(f"docker-archive:{archive}", ref)

    r = get_manifest(shared_server, "skopeo/archive", "v1")
    assert r.status_code == 200
    assert r.headers["content-type"] == DOCKER_MANIFEST
    manifest = r.json()
    config = httpx.get(
        f"{shared_server.url}/v2/skopeo/archive/blobs/{manifest['config']['digest']}",
        timeout=30,
        follow_redirects=True,
    )
    assert config.status_code == 200
    assert sha256(config.content) == manifest["config"]["digest"]
    diff_ids = json.loads(config.content)["rootfs"]["diff_ids"]
    assert diff_ids == json.loads(image.config)["rootfs"]["diff_ids"]
    # Every layer in the registry decompresses to the tar the config's diff_id names.
    for layer, diff_id, original in zip(manifest["layers"], diff_ids, image.layers, strict=True):
        blob = httpx.get(
            f"{shared_server.url}/v2/skopeo/archive/blobs/{layer['digest']}",
            timeout=30,
            follow_redirects=True,
        )
        assert blob.status_code == 200
        assert sha256(blob.content) == layer["digest"]
        assert sha256(gzip.decompress(blob.content)) == diff_id
        assert gzip.decompress(blob.content) == gzip.decompress(original)

    copy(ref, f"oci:{tmp_path / 'out'}:v1")
    out = read_layout(tmp_path / "out", "v1")
    assert json.loads(out.config_bytes)["rootfs"]["diff_ids"] == diff_ids


def test_copy_between_repositories_mounts_blobs(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    image = make_image(2, seed="skopeo-mount", layer_size=4096)
    src = write_layout(tmp_path / "src", {"v1": image})
    first = f"docker://{shared_server.host}/skopeo/mount-src:v1"
    second = f"docker://{shared_server.host}/skopeo/mount-dst:v1"
    copy(f"oci:{src}:v1", first)
    seen = len(request_log(shared_server))

    copy(first, second)

    r = get_manifest(shared_server, "skopeo/mount-dst", "v1")
    assert r.status_code == 200
    assert r.content == image.manifest
    for blob in image.blobs:
        got = httpx.get(
            f"{shared_server.url}/v2/skopeo/mount-dst/blobs/{sha256(blob)}",
            timeout=30,
            follow_redirects=True,
        )
        assert got.status_code == 200
        assert got.content == blob

    # skopeo knows the layers already live in mount-src on this registry and mounts them:
    # a POST …/blobs/uploads/?mount=…&from=… answered 201 Created, and no layer bytes re-sent.
    new = [e for e in request_log(shared_server)[seen:] if "/skopeo/mount-dst/" in e["path"]]
    mounts = [e for e in new if e["method"] == "POST" and e["status"] == 201]
    uploads = [e for e in new if e["method"] in ("PATCH", "PUT") and "/blobs/uploads/" in e["path"]]
    # skopeo's blob-location cache decides what it tries to mount, and it records layers
    # uploaded in parallel racily, so one layer may be uploaded again; every layer it did
    # try to mount was mounted, and nothing was uploaded that was not needed.
    assert 1 <= len(mounts) <= len(image.layers), new
    puts = [e for e in uploads if e["method"] == "PUT"]
    assert len(mounts) + len(puts) <= len(image.blobs), new
    assert all(e["status"] in (201, 202) for e in new if e["method"] == "POST"), new


def test_delete_then_404(shared_server: ServerProcess, tmp_path: Path) -> None:
    image = make_image(1, seed="skopeo-delete")
    src = write_layout(tmp_path / "src", {"v1": image})
    ref = f"docker://{shared_server.host}/skopeo/delete:v1"
    copy(f"oci:{src}:v1", ref)
    assert get_manifest(shared_server, "skopeo/delete", image.digest).status_code == 200

    skopeo("delete", "--tls-verify=false", ref)

    by_digest = get_manifest(shared_server, "skopeo/delete", image.digest)
    assert by_digest.status_code == 404
    assert by_digest.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert get_manifest(shared_server, "skopeo/delete", "v1").status_code == 404
    inspect = run(require("skopeo"), "inspect", "--tls-verify=false", ref, check=False)
    assert inspect.returncode != 0
    assert "manifest unknown" in inspect.stderr.lower(), inspect.stderr


def test_list_tags(shared_server: ServerProcess, tmp_path: Path) -> None:
    image = make_image(1, seed="skopeo-tags")
    src = write_layout(tmp_path / "src", {"v1": image})
    copy(f"oci:{src}:v1", f"docker://{shared_server.host}/skopeo/tags:v1")
    with httpx.Client(base_url=shared_server.url, timeout=30, follow_redirects=True) as c:
        for tag in ["latest", "1.0", "v2", "a_b-c.d"]:
            push_image(c, "skopeo/tags", image, tag)

    out = json.loads(
        skopeo("list-tags", "--tls-verify=false", f"docker://{shared_server.host}/skopeo/tags")
    )

    assert out["Repository"] == f"{shared_server.host}/skopeo/tags"
    assert sorted(out["Tags"]) == sorted(["v1", "latest", "1.0", "v2", "a_b-c.d"])
    missing = run(
        require("skopeo"),
        "list-tags",
        "--tls-verify=false",
        f"docker://{shared_server.host}/skopeo/no-such-repo",
        check=False,
    )
    assert missing.returncode != 0
    assert "name unknown" in missing.stderr.lower() or "404" in missing.stderr, missing.stderr


@pytest.mark.slow
def test_multi_arch_index_copy_all_and_pull_per_platform(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    amd64 = make_image(1, seed="skopeo-amd64", arch="amd64")
    arm64 = make_image(2, seed="skopeo-arm64", arch="arm64")
    src, index = write_index_layout(tmp_path / "src", "multi", [(amd64, "amd64"), (arm64, "arm64")])
    ref = f"docker://{shared_server.host}/skopeo/multi:v1"

    copy(f"oci:{src}:multi", ref, "--all")

    r = get_manifest(shared_server, "skopeo/multi", "v1")
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_INDEX
    assert r.content == index
    assert r.headers["docker-content-digest"] == sha256(index)
    for img in (amd64, arm64):
        child = get_manifest(shared_server, "skopeo/multi", img.digest)
        assert child.status_code == 200
        assert child.content == img.manifest

    for arch, img in (("arm64", arm64), ("amd64", amd64)):
        out = tmp_path / f"out-{arch}"
        skopeo(
            "--override-arch", arch, "--override-os", "linux",
            "copy", "--src-tls-verify=false", ref, f"oci:{out}:{arch}",
        )  # fmt: skip
        pulled = read_layout(out, arch)
        assert pulled.manifest_digest == img.digest
        assert pulled.config_bytes == img.config
        assert json.loads(pulled.config_bytes)["architecture"] == arch
        assert pulled.layer_digests == [sha256(layer) for layer in img.layers]

    # and the whole index comes back unchanged with --all
    copy(ref, f"oci:{tmp_path / 'all'}:multi", "--all")
    back = json.loads((tmp_path / "all" / "index.json").read_text())["manifests"]
    assert [m["digest"] for m in back] == [sha256(index)]


def test_zstd_layers_and_push_by_digest(shared_server: ServerProcess, tmp_path: Path) -> None:
    image = make_image(2, seed="skopeo-zstd")
    src = write_layout(tmp_path / "src", {"v1": image})
    ref = f"docker://{shared_server.host}/skopeo/zstd:v1"

    copy(f"oci:{src}:v1", ref, "--dest-compress", "--dest-compress-format", "zstd")

    r = get_manifest(shared_server, "skopeo/zstd", "v1")
    assert r.status_code == 200
    manifest = r.json()
    assert [layer["mediaType"] for layer in manifest["layers"]] == [
        "application/vnd.oci.image.layer.v1.tar+zstd"
    ] * 2
    digest = r.headers["docker-content-digest"]
    assert digest == sha256(r.content)

    # Push by digest only (no tag): the manifest exists, the tag list stays empty.
    copy(ref, f"docker://{shared_server.host}/skopeo/zstd-bydigest@{digest}")
    by_digest = get_manifest(shared_server, "skopeo/zstd-bydigest", digest)
    assert by_digest.status_code == 200
    assert by_digest.content == r.content
    tags = httpx.get(
        f"{shared_server.url}/v2/skopeo/zstd-bydigest/tags/list", timeout=30, follow_redirects=True
    )
    assert tags.status_code == 200
    assert tags.json()["tags"] == []

    copy(
        f"docker://{shared_server.host}/skopeo/zstd-bydigest@{digest}", f"oci:{tmp_path / 'out'}:v1"
    )
    out = read_layout(tmp_path / "out", "v1")
    assert out.manifest_digest == digest
    assert out.config_bytes == image.config
    assert out.layer_digests == [layer["digest"] for layer in manifest["layers"]]


def test_large_layer_streams_through(shared_server: ServerProcess, tmp_path: Path) -> None:
    image = make_image(1, seed="skopeo-large", layer_size=6 * 1024 * 1024)
    assert len(image.layers[0]) > 6 * 1024 * 1024  # random bytes do not compress
    src = write_layout(tmp_path / "src", {"v1": image})
    ref = f"docker://{shared_server.host}/skopeo/large:v1"

    copy(f"oci:{src}:v1", ref)
    copy(ref, f"oci:{tmp_path / 'out'}:v1")

    out = read_layout(tmp_path / "out", "v1")  # checks every blob against its digest
    assert out.manifest_digest == image.digest
    assert out.layer_digests == [sha256(image.layers[0])]
    part = httpx.get(
        f"{shared_server.url}/v2/skopeo/large/blobs/{sha256(image.layers[0])}",
        headers={"Range": "bytes=1000-1999"},
        timeout=30,
        follow_redirects=True,
    )
    assert part.status_code == 206
    assert part.content == image.layers[0][1000:2000]


def test_sync_whole_repository(shared_server: ServerProcess, tmp_path: Path) -> None:
    images = {f"t{i}": make_image(1, seed=f"skopeo-sync-{i}") for i in range(3)}
    src = write_layout(tmp_path / "src", images)
    for tag in images:
        copy(f"oci:{src}:{tag}", f"docker://{shared_server.host}/skopeo/sync:{tag}")

    run(
        require("skopeo"), "sync", "--src-tls-verify=false", "--src", "docker", "--dest", "dir",
        f"{shared_server.host}/skopeo/sync", tmp_path / "out",
    )  # fmt: skip

    for tag, image in images.items():
        manifest = next((tmp_path / "out").glob(f"**/sync:{tag}/manifest.json"))
        assert manifest.read_bytes() == image.manifest


def test_schema1_push_is_refused_clearly(shared_server: ServerProcess, tmp_path: Path) -> None:
    base = make_image(1, seed="skopeo-schema1")
    config = json.loads(base.config)
    config["history"] = [{"created_by": "hand-built layer"}]  # schema1 needs one entry a layer
    config_bytes = json.dumps(config).encode()
    manifest = json.loads(base.manifest)
    manifest["config"].update(digest=sha256(config_bytes), size=len(config_bytes))
    image = Image(config_bytes, base.layers, json.dumps(manifest).encode())
    src = write_layout(tmp_path / "src", {"v1": image})

    proc = run(
        require("skopeo"), "copy", "--dest-tls-verify=false", "--format", "v2s1",
        f"oci:{src}:v1", f"docker://{shared_server.host}/skopeo/schema1:v1",
        check=False,
    )  # fmt: skip

    assert proc.returncode != 0
    assert "manifest invalid" in proc.stderr.lower(), proc.stderr
    assert "schema 1" in proc.stderr.lower(), proc.stderr
    assert get_manifest(shared_server, "skopeo/schema1", "v1").status_code == 404


def test_delete_index_keeps_children(shared_server: ServerProcess, tmp_path: Path) -> None:
    amd64 = make_image(1, seed="skopeo-del-amd64", arch="amd64")
    arm64 = make_image(1, seed="skopeo-del-arm64", arch="arm64")
    src, index = write_index_layout(tmp_path / "src", "multi", [(amd64, "amd64"), (arm64, "arm64")])
    ref = f"docker://{shared_server.host}/skopeo/del-multi:v1"
    copy(f"oci:{src}:multi", ref, "--all")

    skopeo("delete", "--tls-verify=false", ref)

    assert get_manifest(shared_server, "skopeo/del-multi", "v1").status_code == 404
    assert get_manifest(shared_server, "skopeo/del-multi", sha256(index)).status_code == 404
    for img in (amd64, arm64):
        child = get_manifest(shared_server, "skopeo/del-multi", img.digest)
        assert child.status_code == 200
        assert child.content == img.manifest


def test_concurrent_pushes_sharing_layers(shared_server: ServerProcess, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    image = make_image(3, seed="skopeo-concurrent", layer_size=200_000)
    src = write_layout(tmp_path / "src", {"v1": image})
    targets = [f"skopeo/concurrent-{i % 2}:t{i}" for i in range(4)]

    def push(target: str) -> int:
        return run(
            require("skopeo"), "copy", "--dest-tls-verify=false",
            f"oci:{src}:v1", f"docker://{shared_server.host}/{target}", check=False,
        ).returncode  # fmt: skip

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(push, targets))

    assert codes == [0] * len(targets), shared_server.log()
    for target in targets:
        repo, tag = target.split(":")
        r = get_manifest(shared_server, repo, tag)
        assert r.status_code == 200
        assert r.content == image.manifest
        for blob in image.blobs:
            got = httpx.get(
                f"{shared_server.url}/v2/{repo}/blobs/{sha256(blob)}",
                timeout=30,
                follow_redirects=True,
            )
            assert got.content == blob
