"""The `oras` Python SDK against a real `trustyard serve`: artifacts and the referrers API."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from tests.integration.images import OCI_INDEX, OCI_MANIFEST, make_image, push_image, sha256
from tests.integration.server import ServerProcess

oras_provider = pytest.importorskip("oras.provider")
oras_oci = pytest.importorskip("oras.oci")

CONFIG_TYPE = "application/vnd.trustyard.test.config.v1+json"
FILE_TYPE = "application/vnd.trustyard.test.file.v1"
SBOM_TYPE = "application/vnd.trustyard.test.sbom.v1+json"
SIG_TYPE = "application/vnd.trustyard.test.signature.v1+json"


def registry(server: ServerProcess) -> oras_provider.Registry:
    return oras_provider.Registry(hostname=server.host, insecure=True)


def write_files(root: Path, files: dict[str, bytes]) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths.append(root / name)
    return paths


def test_push_and_pull_artifact_with_custom_media_types(
    shared_server: ServerProcess, tmp_path: Path
) -> None:
    reg = registry(shared_server)
    files = {"model.bin": os.urandom(200_000), "README.txt": b"hello from trustyard\n"}
    paths = write_files(tmp_path / "in", files)
    config = tmp_path / "config.json"
    config.write_bytes(b'{"purpose": "interop"}')
    target = f"{shared_server.host}/oras/artifact:v1"

    response = reg.push(
        target=target,
        files=[f"{p}:{FILE_TYPE}" for p in paths],
        manifest_config=f"{config}:{CONFIG_TYPE}",
        manifest_annotations={"org.example.note": "interop"},
        disable_path_validation=True,
        quiet=True,
    )
    assert response.status_code == 201
    digest = response.headers["Docker-Content-Digest"]

    r = httpx.get(
        f"{shared_server.url}/v2/oras/artifact/manifests/v1",
        headers={"Accept": OCI_MANIFEST},
        timeout=30,
        follow_redirects=True,
    )
    assert r.status_code == 200
    assert sha256(r.content) == digest == r.headers["docker-content-digest"]
    manifest = r.json()
    assert manifest["config"]["mediaType"] == CONFIG_TYPE
    assert manifest["config"]["digest"] == sha256(config.read_bytes())
    assert [layer["mediaType"] for layer in manifest["layers"]] == [FILE_TYPE, FILE_TYPE]
    assert manifest["annotations"]["org.example.note"] == "interop"

    assert reg.get_manifest(target) == manifest
    assert reg.get_tags(f"{shared_server.host}/oras/artifact") == ["v1"]

    out = tmp_path / "out"
    pulled = reg.pull(target=target, outdir=str(out))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for name, data in files.items():
        assert (out / name).read_bytes() == data
    # by digest too
    out2 = tmp_path / "out2"
    reg.pull(target=f"{shared_server.host}/oras/artifact@{digest}", outdir=str(out2))
    assert (out2 / "model.bin").read_bytes() == files["model.bin"]

    blob = reg.get_blob(f"{shared_server.host}/oras/artifact", manifest["config"]["digest"])
    assert blob.status_code == 200
    assert blob.content == config.read_bytes()


def test_chunked_push(shared_server: ServerProcess, tmp_path: Path) -> None:
    reg = registry(shared_server)
    data = os.urandom(300_000)
    (path,) = write_files(tmp_path / "in", {"big.bin": data})
    target = f"{shared_server.host}/oras/chunked:v1"

    reg.push(
        target=target,
        files=[str(path)],
        do_chunked=True,
        chunk_size=64 * 1024,
        disable_path_validation=True,
        quiet=True,
    )

    manifest = reg.get_manifest(target)
    assert manifest["layers"][0]["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
    out = tmp_path / "out"
    reg.pull(target=target, outdir=str(out))
    assert (out / "big.bin").read_bytes() == data


def test_attach_referrers_and_discover_them(shared_server: ServerProcess, tmp_path: Path) -> None:
    repo = "oras/referrers"
    image = make_image(1, seed="oras-subject")
    with httpx.Client(base_url=shared_server.url, timeout=30, follow_redirects=True) as c:
        push_image(c, repo, image, "v1")

        empty = c.get(f"/v2/{repo}/referrers/{image.digest}")
        assert empty.status_code == 200
        assert empty.headers["content-type"].startswith(OCI_INDEX)
        assert empty.json()["manifests"] == []

    reg = registry(shared_server)
    subject = oras_oci.Subject(
        mediaType=OCI_MANIFEST, digest=image.digest, size=len(image.manifest)
    )
    pushed: dict[str, str] = {}
    for kind, config_type in (("sbom", SBOM_TYPE), ("sig", SIG_TYPE)):
        (path,) = write_files(tmp_path / kind, {f"{kind}.json": json.dumps({"k": kind}).encode()})
        config = tmp_path / f"{kind}-config.json"
        config.write_text("{}")
        response = reg.push(
            target=f"{shared_server.host}/{repo}:{kind}",
            files=[str(path)],
            manifest_config=f"{config}:{config_type}",
            manifest_annotations={"org.example.kind": kind},
            subject=subject,
            disable_path_validation=True,
            quiet=True,
        )
        assert response.status_code == 201
        assert response.headers.get("OCI-Subject") == image.digest
        pushed[config_type] = response.headers["Docker-Content-Digest"]

    with httpx.Client(base_url=shared_server.url, timeout=30, follow_redirects=True) as c:
        r = c.get(f"/v2/{repo}/referrers/{image.digest}")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith(OCI_INDEX)
        body = r.json()
        assert body["schemaVersion"] == 2
        assert body["mediaType"] == OCI_INDEX
        by_type = {m["artifactType"]: m for m in body["manifests"]}
        assert set(by_type) == {SBOM_TYPE, SIG_TYPE}
        for config_type, digest in pushed.items():
            entry = by_type[config_type]
            assert entry["digest"] == digest
            assert entry["mediaType"] == OCI_MANIFEST
            manifest = c.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
            assert entry["size"] == len(manifest.content)
            assert manifest.json()["subject"]["digest"] == image.digest
        assert by_type[SBOM_TYPE]["annotations"]["org.example.kind"] == "sbom"
        assert "OCI-Filters-Applied" not in r.headers

        filtered = c.get(f"/v2/{repo}/referrers/{image.digest}", params={"artifactType": SIG_TYPE})
        assert filtered.status_code == 200
        assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
        assert [m["digest"] for m in filtered.json()["manifests"]] == [pushed[SIG_TYPE]]

        none = c.get(
            f"/v2/{repo}/referrers/{image.digest}",
            params={"artifactType": "application/vnd.nobody.uses.this"},
        )
        assert none.status_code == 200
        assert none.headers["OCI-Filters-Applied"] == "artifactType"
        assert none.json()["manifests"] == []

        # Deleting a referrer removes it from the list.
        assert c.delete(f"/v2/{repo}/manifests/{pushed[SBOM_TYPE]}").status_code == 202
        after = c.get(f"/v2/{repo}/referrers/{image.digest}").json()["manifests"]
        assert [m["digest"] for m in after] == [pushed[SIG_TYPE]]


def test_tags_pagination_and_delete_tag(shared_server: ServerProcess) -> None:
    repo = "oras/tags"
    image = make_image(1, seed="oras-tags")
    tags = ["a1", "b2", "c3", "d4", "e5"]
    with httpx.Client(base_url=shared_server.url, timeout=30, follow_redirects=True) as c:
        for tag in tags:
            push_image(c, repo, image, tag)
    reg = registry(shared_server)
    container = f"{shared_server.host}/{repo}"

    assert reg.get_tags(container) == tags
    assert reg.get_tags(container, N=2) == tags[:2]

    # Follow the Link header page by page, as the SDK's paginator does.
    pages: list[list[str]] = []

    def collect(response: object) -> bool:
        pages.append(response.json()["tags"])  # type: ignore[attr-defined]
        return True

    reg._do_paginated_request(
        f"http://{container.split('/', 1)[0]}/v2/{repo}/tags/list?n=2", collect
    )
    assert pages == [["a1", "b2"], ["c3", "d4"], ["e5"]]

    # delete_tag: HEAD the tag for its digest, DELETE by digest (202); every tag of it goes.
    assert reg.delete_tag(container, "c3") is True
    with httpx.Client(base_url=shared_server.url, timeout=30, follow_redirects=True) as c:
        gone = c.get(f"/v2/{repo}/manifests/{image.digest}", headers={"Accept": OCI_MANIFEST})
        assert gone.status_code == 404
        assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert reg.delete_tag(container, "c3") is False
