"""Malformed, hostile and oversized input: the spec's error code, a clear message, nothing lost."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.integration.images import OCI_MANIFEST, make_image, push_blob, push_image, sha256
from tests.integration.server import ServerProcess


def _code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


def _storage_files(server: ServerProcess) -> list[Path]:
    return sorted(p for p in (server.data_dir / "storage").rglob("*") if p.is_file())


def test_digest_mismatch_monolithic_commits_nothing(
    client: httpx.Client, server: ServerProcess
) -> None:
    wrong = sha256(b"something else")
    r = client.post("/v2/m/blobs/uploads/", params={"digest": wrong}, content=b"actual bytes")
    assert r.status_code == 400 and _code(r) == "DIGEST_INVALID"
    assert "sha256:" in r.json()["errors"][0]["message"]
    assert client.head(f"/v2/m/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/m/blobs/{sha256(b'actual bytes')}").status_code == 404
    assert _storage_files(server) == []  # no blob, no upload junk


def test_digest_mismatch_on_put_keeps_session_as_before(client: httpx.Client) -> None:
    location = client.post("/v2/m2/blobs/uploads/").headers["Location"]
    assert (
        client.patch(location, content=b"first", headers={"Content-Range": "0-4"}).status_code
        == 202
    )
    r = client.put(
        location,
        params={"digest": sha256(b"nope")},
        content=b"second",
        headers={"Content-Range": "5-10"},
    )
    assert r.status_code == 400 and _code(r) == "DIGEST_INVALID"
    assert client.get(location).headers["Range"] == "0-4"
    r = client.put(
        location,
        params={"digest": sha256(b"firstsecond")},
        content=b"second",
        headers={"Content-Range": "5-10"},
    )
    assert r.status_code == 201


@pytest.mark.parametrize(
    "digest",
    ["sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "nocolon", "sha256:" + "G" * 64],
)
def test_invalid_digests(client: httpx.Client, digest: str) -> None:
    r = client.post("/v2/d/blobs/uploads/", params={"digest": digest}, content=b"x")
    assert r.status_code == 400 and _code(r) == "DIGEST_INVALID"
    r = client.get(f"/v2/d/blobs/{digest}")
    assert r.status_code == 400 and _code(r) == "DIGEST_INVALID"


def test_put_without_digest(client: httpx.Client) -> None:
    location = client.post("/v2/nd/blobs/uploads/").headers["Location"]
    r = client.put(location, content=b"abc")
    assert r.status_code == 400 and _code(r) == "DIGEST_INVALID"


@pytest.mark.parametrize("name", ["UPPER", "a..b", "-lead", "a_", "x" * 256, "a/-b"])
def test_invalid_repository_names(client: httpx.Client, name: str) -> None:
    r = client.get(f"/v2/{name}/tags/list")
    assert r.status_code == 400 and _code(r) == "NAME_INVALID"
    r = client.post(f"/v2/{name}/blobs/uploads/")
    assert r.status_code == 400 and _code(r) == "NAME_INVALID"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/../../../tmp/evil/blobs/uploads/",
        "/v2/a/../../../../tmp/evil/blobs/uploads/",
        "/v2/%2e%2e/%2e%2e/tmp/evil/blobs/uploads/",
        "/v2//tmp/evil/blobs/uploads/",
        "/v2/a%2F..%2F..%2Fevil/blobs/uploads/",
    ],
)
def test_path_traversal_never_escapes(server: ServerProcess, tmp_path: Path, path: str) -> None:
    out = subprocess.run(
        [
            "curl",
            "-s",
            "--path-as-is",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            server.url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout in ("400", "404", "405"), out.stdout
    assert not Path("/tmp/evil").exists()
    data_files = {p.resolve() for p in server.data_dir.rglob("*")}
    assert all(str(p).startswith(str(server.data_dir.resolve())) for p in data_files)


def test_upload_ids_are_not_paths(client: httpx.Client, server: ServerProcess) -> None:
    # An encoded slash makes the path match no route at all: a plain 404.
    r = client.get("/v2/u/blobs/uploads/..%2F..%2Fmetadata.db")
    assert r.status_code == 404 and r.json()["errors"]
    for upload_id in ("00000000000000000000000000000000", "not-an-id", "ABCDEF"):
        r = client.get(f"/v2/u/blobs/uploads/{upload_id}")
        assert r.status_code == 404 and _code(r) == "BLOB_UPLOAD_UNKNOWN"
        r = client.put(f"/v2/u/blobs/uploads/{upload_id}", params={"digest": sha256(b"")})
        assert r.status_code == 404 and _code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_upload_belongs_to_its_repository(client: httpx.Client) -> None:
    location = client.post("/v2/owner/blobs/uploads/").headers["Location"]
    other = location.replace("/v2/owner/", "/v2/intruder/")
    r = client.patch(other, content=b"x")
    assert r.status_code == 404 and _code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_patch_after_put(client: httpx.Client) -> None:
    location = client.post("/v2/pp/blobs/uploads/").headers["Location"]
    assert (
        client.put(location, params={"digest": sha256(b"data")}, content=b"data").status_code == 201
    )
    r = client.patch(location, content=b"more")
    assert r.status_code == 404 and _code(r) == "BLOB_UPLOAD_UNKNOWN"


def test_content_range_length_mismatch(client: httpx.Client) -> None:
    location = client.post("/v2/cr/blobs/uploads/").headers["Location"]
    r = client.patch(location, content=b"abcd", headers={"Content-Range": "0-9"})
    assert r.status_code in (400, 416)
    assert client.get(location).headers["Range"] == "0-0"
    r = client.patch(location, content=b"abcd", headers={"Content-Range": "garbage"})
    assert r.status_code == 416


def _raw_request(server: ServerProcess, head: str, body: bytes) -> None:
    """Send a request whose body is shorter than its Content-Length, then hang up."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(head.encode() + body)
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(65536)
        except OSError:
            pass


def test_client_disconnect_mid_upload_loses_nothing(
    client: httpx.Client, server: ServerProcess
) -> None:
    location = client.post("/v2/dc/blobs/uploads/").headers["Location"]
    assert (
        client.patch(location, content=b"0123456789", headers={"Content-Range": "0-9"}).status_code
        == 202
    )
    head = f"PATCH {location} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nContent-Range: 10-100009\r\n\r\n"
    _raw_request(server, head, os.urandom(30000))
    # The accepted chunk is intact, the broken one is gone, and the upload can be resumed.
    assert client.get(location).headers["Range"] == "0-9"
    data = b"0123456789" + b"tail"
    assert (
        client.patch(location, content=b"tail", headers={"Content-Range": "10-13"}).status_code
        == 202
    )
    assert client.put(location, params={"digest": sha256(data)}).status_code == 201


def test_client_disconnect_mid_monolithic_push(client: httpx.Client, server: ServerProcess) -> None:
    data = os.urandom(100000)
    head = f"POST /v2/dm/blobs/uploads/?digest={sha256(data)} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
    _raw_request(server, head, data[:40000])
    assert client.head(f"/v2/dm/blobs/{sha256(data)}").status_code == 404
    assert _storage_files(server) == []


def test_content_length_longer_than_body_is_rejected(client: httpx.Client) -> None:
    location = client.post("/v2/cl/blobs/uploads/").headers["Location"]
    r = client.patch(
        location, content=b"abc", headers={"Content-Range": "0-2", "Content-Length": "3"}
    )
    assert r.status_code == 202


def test_concurrent_uploads_of_same_blob(client: httpx.Client, server: ServerProcess) -> None:
    data = os.urandom(500_000)
    digest = sha256(data)
    results: list[int] = []

    def push(repo: str) -> None:
        with httpx.Client(base_url=server.url) as c:
            results.append(
                c.post(
                    f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data
                ).status_code
            )

    threads = [threading.Thread(target=push, args=(f"conc{i % 2}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [201] * 6
    for repo in ("conc0", "conc1"):
        assert client.get(f"/v2/{repo}/blobs/{digest}").content == data
    assert len([p for p in _storage_files(server) if "blobs" in p.parts]) == 1


def test_manifest_too_large(client: httpx.Client) -> None:
    body = b'{"schemaVersion":2,"pad":"' + b"x" * (4 * 1024 * 1024) + b'"}'
    r = client.put("/v2/big/manifests/v1", content=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413 and _code(r) == "SIZE_INVALID"
    assert client.get("/v2/big/manifests/v1").status_code == 404


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        (b"{not json", OCI_MANIFEST, "not valid JSON"),
        (
            b'{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[],"signatures":[]}',
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            "schema 1",
        ),
        (None, "application/vnd.docker.distribution.manifest.v2+json", "does not match"),
        (b'{"schemaVersion":2}', "text/plain", "unsupported manifest media type"),
    ],
)
def test_manifest_invalid(
    client: httpx.Client, body: bytes | None, ctype: str, needle: str
) -> None:
    if body is None:
        image = make_image()
        push_image(client, "mi", image)
        body = image.manifest
    r = client.put("/v2/mi/manifests/bad", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID"
    assert needle in r.json()["errors"][0]["message"]
    assert client.get("/v2/mi/manifests/bad").status_code == 404


def test_manifest_blob_unknown(client: httpx.Client) -> None:
    image = make_image()
    push_blob(client, "mbu", image.config)  # layers missing
    r = client.put(
        "/v2/mbu/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and _code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"]["digest"] == sha256(image.layers[0]) or r.json()[
        "errors"
    ][0]["detail"]["digest"] == sha256(image.layers[1])


def test_blob_in_other_repository_is_not_readable(client: httpx.Client) -> None:
    digest = push_blob(client, "private", b"secret")
    push_blob(client, "public", b"other")
    r = client.get(f"/v2/public/blobs/{digest}")
    assert r.status_code == 404 and _code(r) == "BLOB_UNKNOWN"


def test_manifest_digest_mismatch(client: httpx.Client) -> None:
    image = make_image()
    push_image(client, "mdm", image)
    r = client.put(
        f"/v2/mdm/manifests/{sha256(b'x')}",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400 and _code(r) == "DIGEST_INVALID"


@pytest.mark.parametrize("ref", [".hidden", "a" * 129, "has space"])
def test_invalid_tags(client: httpx.Client, ref: str) -> None:
    image = make_image()
    push_image(client, "it", image)
    r = client.put(
        f"/v2/it/manifests/{ref}", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and _code(r) == "MANIFEST_INVALID"


def test_unknown_things_are_404_in_spec_shape(client: httpx.Client) -> None:
    r = client.get("/v2/nope/manifests/latest")
    assert r.status_code == 404 and _code(r) == "NAME_UNKNOWN"
    push_image(client, "yes", make_image())
    r = client.get("/v2/yes/manifests/latest")
    assert r.status_code == 404 and _code(r) == "MANIFEST_UNKNOWN"
    r = client.head("/v2/yes/manifests/latest")
    assert r.status_code == 404 and r.content == b""
    r = client.get("/v2/yes/blobs/" + sha256(b"?"))
    assert r.status_code == 404 and _code(r) == "BLOB_UNKNOWN"


def test_wrong_method_is_405_json(client: httpx.Client) -> None:
    r = client.post("/v2/x/manifests/latest")
    assert r.status_code == 405 and _code(r) == "UNSUPPORTED"


def test_no_traceback_ever(client: httpx.Client, server: ServerProcess) -> None:
    hostile = [
        ("GET", "/v2/a/manifests/" + "%00" * 10),
        ("PUT", "/v2/a/manifests/v1"),
        ("POST", "/v2/a/blobs/uploads/?mount=%00&from=%00"),
        ("GET", "/v2/_catalog?n=99999999999999999999999"),
        ("GET", "/v2/a/referrers/sha256:" + "0" * 64 + "?artifactType=" + "x" * 5000),
    ]
    for method, path in hostile:
        r = client.request(method, path, content=b"\xff\xfe" if method == "PUT" else None)
        assert r.status_code < 500, (method, path, r.text)
        assert "Traceback" not in r.text
        json.loads(r.text or "{}")
