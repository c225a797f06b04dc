"""OCI distribution-spec push and pull workflows over plain HTTP (each MUST/SHOULD we serve)."""

from __future__ import annotations

import json
import os

import httpx

from tests.integration.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    make_index,
    push_blob,
    push_image,
    sha256,
)


def test_base_endpoint(client: httpx.Client) -> None:
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_post_with_digest(client: httpx.Client) -> None:
    data = os.urandom(10_000)
    digest = sha256(data)
    r = client.post("/v2/a/b/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/a/b/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    r = client.get(f"/v2/a/b/blobs/{digest}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["ETag"] == f'"{digest}"'


def test_post_then_put(client: httpx.Client) -> None:
    data = os.urandom(5000)
    r = client.post("/v2/repo/blobs/uploads/")
    assert r.status_code == 202
    location = r.headers["Location"]
    assert r.headers["Docker-Upload-UUID"] in location
    r = client.put(
        location,
        params={"digest": sha256(data)},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    assert client.head(f"/v2/repo/blobs/{sha256(data)}").headers["Content-Length"] == "5000"


def test_chunked_upload_with_status(client: httpx.Client) -> None:
    data = os.urandom(300_000)
    chunks = [data[:100_000], data[100_000:250_000], data[250_000:]]
    location = client.post("/v2/chunky/blobs/uploads/").headers["Location"]
    offset = 0
    for chunk in chunks:
        end = offset + len(chunk) - 1
        r = client.patch(
            location,
            content=chunk,
            headers={
                "Content-Range": f"{offset}-{end}",
                "Content-Type": "application/octet-stream",
            },
        )
        assert r.status_code == 202, r.text
        assert r.headers["Range"] == f"0-{end}"
        location = r.headers["Location"]
        offset = end + 1
        status = client.get(location)
        assert status.status_code == 204
        assert status.headers["Range"] == f"0-{end}"
    r = client.put(location, params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/chunky/blobs/{sha256(data)}").content == data


def test_streamed_patch_without_content_range(client: httpx.Client) -> None:
    data = os.urandom(1 << 20)

    def gen():
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    location = client.post("/v2/stream/blobs/uploads/").headers["Location"]
    r = client.patch(location, content=gen())
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    assert client.put(location, params={"digest": sha256(data)}).status_code == 201


def test_out_of_order_chunk_is_416(client: httpx.Client) -> None:
    location = client.post("/v2/ooo/blobs/uploads/").headers["Location"]
    assert (
        client.patch(location, content=b"abcd", headers={"Content-Range": "0-3"}).status_code == 202
    )
    r = client.patch(location, content=b"efgh", headers={"Content-Range": "10-13"})
    assert r.status_code == 416
    assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
    assert r.headers["Range"] == "0-3"
    # The session is intact and continues at the right offset.
    assert (
        client.patch(location, content=b"efgh", headers={"Content-Range": "4-7"}).status_code == 202
    )
    assert client.put(location, params={"digest": sha256(b"abcdefgh")}).status_code == 201


def test_put_manifest_and_pull_by_tag_and_digest(client: httpx.Client) -> None:
    image = make_image()
    push_image(client, "app", image, "v1")
    for ref in ("v1", image.digest):
        r = client.get(f"/v2/app/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == image.manifest  # exact bytes
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == image.digest
        h = client.head(f"/v2/app/manifests/{ref}")
        assert h.status_code == 200 and h.content == b""
        assert h.headers["Content-Length"] == str(len(image.manifest))
        assert h.headers["Docker-Content-Digest"] == image.digest
    for blob in image.blobs:
        assert client.get(f"/v2/app/blobs/{sha256(blob)}").content == blob


def test_manifest_put_response(client: httpx.Client) -> None:
    image = make_image()
    for blob in image.blobs:
        push_blob(client, "resp", blob)
    r = client.put(
        "/v2/resp/manifests/latest", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/resp/manifests/{image.digest}"
    assert r.headers["Docker-Content-Digest"] == image.digest


def test_docker_schema2_and_manifest_list(client: httpx.Client) -> None:
    img = make_image()
    body = json.loads(img.manifest)
    body["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json"
    body["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json"
    for layer in body["layers"]:
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    raw = json.dumps(body).encode()
    for blob in img.blobs:
        push_blob(client, "dock", blob)
    ct = "application/vnd.docker.distribution.manifest.v2+json"
    assert (
        client.put("/v2/dock/manifests/s2", content=raw, headers={"Content-Type": ct}).status_code
        == 201
    )
    listing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [
                {
                    "mediaType": ct,
                    "digest": sha256(raw),
                    "size": len(raw),
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    lct = "application/vnd.docker.distribution.manifest.list.v2+json"
    assert (
        client.put(
            "/v2/dock/manifests/list", content=listing, headers={"Content-Type": lct}
        ).status_code
        == 201
    )
    r = client.get("/v2/dock/manifests/list", headers={"Accept": f"{lct}, {ct}"})
    assert r.headers["Content-Type"] == lct and r.content == listing
    # A client that cannot read lists gets the linux/amd64 image, as Distribution does.
    r = client.get("/v2/dock/manifests/list", headers={"Accept": ct})
    assert r.status_code == 200 and r.content == raw


def test_oci_index_requires_children(client: httpx.Client) -> None:
    amd, arm = make_image(seed="amd"), make_image(seed="arm", arch="arm64")
    index = make_index([(amd, "amd64"), (arm, "arm64")])
    push_image(client, "multi", amd)
    r = client.put("/v2/multi/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX})
    assert r.status_code == 400  # Distribution's answer: containerd then pushes the child
    assert r.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    push_image(client, "multi", arm)
    assert (
        client.put(
            "/v2/multi/manifests/latest", content=index, headers={"Content-Type": OCI_INDEX}
        ).status_code
        == 201
    )
    assert client.get("/v2/multi/manifests/latest", headers={"Accept": OCI_INDEX}).content == index


def test_cross_repo_mount(client: httpx.Client) -> None:
    data = os.urandom(1000)
    digest = push_blob(client, "src/repo", data)
    r = client.post("/v2/dst/repo/blobs/uploads/", params={"mount": digest, "from": "src/repo"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/dst/repo/blobs/{digest}"
    assert client.get(f"/v2/dst/repo/blobs/{digest}").content == data


def test_mount_without_from_and_fallback(client: httpx.Client) -> None:
    data = os.urandom(1000)
    digest = push_blob(client, "one", data)
    r = client.post("/v2/two/blobs/uploads/", params={"mount": digest})
    assert r.status_code == 201
    # Unknown blob, or a source that lacks it: fall back to an upload session (202).
    r = client.post("/v2/three/blobs/uploads/", params={"mount": sha256(b"nope"), "from": "one"})
    assert r.status_code == 202 and "/blobs/uploads/" in r.headers["Location"]
    r = client.post("/v2/three/blobs/uploads/", params={"mount": digest, "from": "nonexistent"})
    assert r.status_code == 202


def test_blob_range_requests(client: httpx.Client) -> None:
    data = bytes(range(256)) * 40
    digest = push_blob(client, "ranged", data)
    r = client.get(f"/v2/ranged/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = client.get(f"/v2/ranged/blobs/{digest}", headers={"Range": "bytes=-5"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = client.get(f"/v2/ranged/blobs/{digest}", headers={"If-None-Match": f'"{digest}"'})
    assert r.status_code == 304


def test_blob_head_does_not_send_body(client: httpx.Client) -> None:
    data = os.urandom(4096)
    digest = push_blob(client, "h", data)
    r = client.head(f"/v2/h/blobs/{digest}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["Content-Length"] == "4096"
    assert r.headers["Docker-Content-Digest"] == digest
    assert client.head(f"/v2/h/blobs/{sha256(b'other')}").status_code == 404


def test_same_blob_pushed_twice_stored_once(client: httpx.Client, server) -> None:
    data = os.urandom(2048)
    push_blob(client, "r1", data)
    push_blob(client, "r2", data)
    files = [p for p in (server.data_dir / "storage" / "blobs").rglob("*") if p.is_file()]
    assert len(files) == 1


def test_manifest_multiple_tags_in_one_put(client: httpx.Client) -> None:
    image = make_image()
    for blob in image.blobs:
        push_blob(client, "mt", blob)
    r = client.put(
        f"/v2/mt/manifests/{image.digest}?tag=a&tag=b",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201
    assert r.headers.get_list("OCI-Tag") == ["a", "b"]
    assert client.get("/v2/mt/tags/list").json()["tags"] == ["a", "b"]


def test_upload_survives_server_restart(server) -> None:
    data = os.urandom(200_000)
    with httpx.Client(base_url=server.url) as c:
        location = c.post("/v2/resume/blobs/uploads/").headers["Location"]
        assert (
            c.patch(
                location, content=data[:100_000], headers={"Content-Range": "0-99999"}
            ).status_code
            == 202
        )
    server.restart()
    with httpx.Client(base_url=server.url) as c:
        assert c.get(location).headers["Range"] == "0-99999"
        assert (
            c.patch(
                location, content=data[100_000:], headers={"Content-Range": "100000-199999"}
            ).status_code
            == 202
        )
        r = c.put(location, params={"digest": sha256(data)})
        assert r.status_code == 201
        assert c.get(f"/v2/resume/blobs/{sha256(data)}").content == data


def test_two_workers_serve_one_upload(tmp_path) -> None:
    """Chunks landing on different worker processes still complete with the right digest."""
    from tests.integration.server import ServerProcess

    srv = ServerProcess(tmp_path / "data", extra_args=["--workers", "2"]).start()
    try:
        data = os.urandom(64 * 1024 * 8)
        location = httpx.post(f"{srv.url}/v2/w/blobs/uploads/").headers["Location"]
        for i in range(8):
            # New connection per chunk, so the kernel spreads them over both workers.
            chunk = data[i * 65536 : (i + 1) * 65536]
            r = httpx.patch(
                f"{srv.url}{location}",
                content=chunk,
                headers={"Content-Range": f"{i * 65536}-{(i + 1) * 65536 - 1}"},
            )
            assert r.status_code == 202, r.text
        r = httpx.put(f"{srv.url}{location}", params={"digest": sha256(data)})
        assert r.status_code == 201, r.text
        assert httpx.get(f"{srv.url}/v2/w/blobs/{sha256(data)}").content == data
    finally:
        srv.stop()
