"""Answers clients act on, as Distribution and the conformance suite give them (issue 17).

- a reference that cannot name a manifest is unknown (404) on GET/HEAD/DELETE, invalid on PUT;
- a manifest or index whose blob or child is missing is 400 MANIFEST_BLOB_UNKNOWN, which
  containerd's pusher reads as "push the missing child"; operators who mirror some platforms of
  an index choose which children must exist (`index_platforms`);
- an oversize manifest is answered 413 after its body was read, never a broken pipe.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Image,
    make_image,
    push_blob,
    push_image,
    sha256,
)
from tests.integration.server import ServerProcess
from trustyard.config import ConfigError, load_settings

LIMIT = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module (starting one takes seconds); tests use their own repositories."""
    srv = ServerProcess(tmp_path_factory.mktemp("answers") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def client(registry: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=registry.url, timeout=60) as c:
        yield c


def _error(r: httpx.Response) -> dict[str, Any]:
    entry: dict[str, Any] = r.json()["errors"][0]
    return entry


# -- references that cannot name a manifest ----------------------------------------------------
UNNAMEABLE = [
    ".INVALID_MANIFEST_first",  # the conformance suite's reference
    "-leading-dash",
    "a" * 129,
    "sha256:xyz",
    "sha256:" + "A" * 64,  # upper-case hex
    "sha1:" + "0" * 40,  # an algorithm we do not compute
    "md5:" + "0" * 32,
    "has%20space",
]


@pytest.mark.parametrize("ref", UNNAMEABLE)
def test_get_head_delete_of_an_unnameable_reference_is_manifest_unknown(
    client: httpx.Client, ref: str
) -> None:
    push_image(client, "badref", make_image(), "v1")
    for repo in ("badref", "no-such-repo"):
        r = client.get(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code == 404, r.text
        assert _error(r)["code"] == "MANIFEST_UNKNOWN"
        assert "not in repository" in _error(r)["message"]
        r = client.head(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code == 404 and r.content == b""
        r = client.delete(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code == 404 and _error(r)["code"] == "MANIFEST_UNKNOWN"
    assert client.get("/v2/badref/manifests/v1").status_code == 200  # nothing else changed


@pytest.mark.parametrize("ref", [".INVALID_MANIFEST_first", "a" * 129, "has%20space"])
def test_put_to_an_invalid_tag_stays_manifest_invalid(client: httpx.Client, ref: str) -> None:
    image = make_image()
    for blob in image.blobs:
        push_blob(client, "badput", blob)
    r = client.put(
        f"/v2/badput/manifests/{ref}",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400 and _error(r)["code"] == "MANIFEST_INVALID"
    assert "invalid" in _error(r)["message"]


def test_put_to_a_malformed_digest_is_digest_invalid(client: httpx.Client) -> None:
    image = make_image()
    for blob in image.blobs:
        push_blob(client, "badput", blob)
    r = client.put(
        "/v2/badput/manifests/sha256:xyz",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400 and _error(r)["code"] == "DIGEST_INVALID"


# -- missing blobs and children ----------------------------------------------------------------
@pytest.mark.parametrize("missing", ["config", "layer", "all"])
def test_manifest_with_a_missing_blob_is_400_manifest_blob_unknown(
    client: httpx.Client, missing: str
) -> None:
    image = make_image()
    present = {
        "config": image.layers,
        "layer": [image.config, image.layers[0]],
        "all": [],
    }[missing]
    for blob in present:
        push_blob(client, f"mbu-{missing}", blob)
    absent = {sha256(b) for b in image.blobs} - {sha256(b) for b in present}
    r = client.put(
        f"/v2/mbu-{missing}/manifests/v1",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 400, r.text
    error = _error(r)
    assert error["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert error["detail"]["digest"] in absent and "push the blob first" in error["message"]
    assert client.get(f"/v2/mbu-{missing}/manifests/v1").status_code == 404
    # After the client pushes what was missing, the same PUT succeeds.
    for blob in image.blobs:
        push_blob(client, f"mbu-{missing}", blob)
    r = client.put(
        f"/v2/mbu-{missing}/manifests/v1",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201


def test_blob_of_another_repository_does_not_count(client: httpx.Client) -> None:
    image = make_image()
    push_image(client, "owner", image)
    r = client.put(
        "/v2/stranger/manifests/v1", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and _error(r)["code"] == "MANIFEST_BLOB_UNKNOWN"


def _index(children: list[tuple[Image, dict[str, str] | None]]) -> bytes:
    manifests: list[dict[str, Any]] = []
    for image, platform in children:
        entry: dict[str, Any] = {
            "mediaType": OCI_MANIFEST,
            "digest": image.digest,
            "size": len(image.manifest),
        }
        if platform is not None:
            entry["platform"] = platform
        manifests.append(entry)
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()


AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64 = {"os": "linux", "architecture": "arm64", "variant": "v8"}
ARMV7 = {"os": "linux", "architecture": "arm", "variant": "v7"}


def _put_index(client: httpx.Client, repo: str, index: bytes, ref: str = "multi") -> httpx.Response:
    return client.put(
        f"/v2/{repo}/manifests/{ref}", content=index, headers={"Content-Type": OCI_INDEX}
    )


def test_index_with_a_missing_child_is_400_manifest_blob_unknown(client: httpx.Client) -> None:
    amd, arm = make_image(seed="amd"), make_image(seed="arm", arch="arm64")
    push_image(client, "idx", amd)
    index = _index([(amd, AMD64), (arm, ARM64)])
    r = _put_index(client, "idx", index)
    assert r.status_code == 400, r.text
    assert _error(r)["code"] == "MANIFEST_BLOB_UNKNOWN"
    assert _error(r)["detail"]["digest"] == arm.digest
    assert "push the child manifests first" in _error(r)["message"]
    # Nested: an index of that index is refused the same way while the inner one is missing.
    outer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_INDEX, "digest": sha256(index), "size": len(index)}],
        }
    ).encode()
    r = _put_index(client, "idx", outer, "outer")
    assert r.status_code == 400 and _error(r)["detail"]["digest"] == sha256(index)
    push_image(client, "idx", arm)
    assert _put_index(client, "idx", index).status_code == 201
    assert _put_index(client, "idx", outer, "outer").status_code == 201


@pytest.fixture(scope="module")
def mirror(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[httpx.Client]:
    srv = ServerProcess(
        tmp_path_factory.mktemp("mirror") / "data",
        extra_env={"TRUSTYARD_INDEX_PLATFORMS": request.param},
    ).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            yield c
    finally:
        srv.stop()


@pytest.mark.parametrize("mirror", ["linux/amd64"], indirect=True)
def test_platform_list_lets_unlisted_children_be_missing(mirror: httpx.Client) -> None:
    amd, arm, armv7 = (
        make_image(seed="a"),
        make_image(seed="b", arch="arm64"),
        make_image(seed="c", arch="arm"),
    )
    push_image(mirror, "mirror", amd)
    index = _index([(amd, AMD64), (arm, ARM64), (armv7, ARMV7)])
    r = _put_index(mirror, "mirror", index)
    assert r.status_code == 201, r.text
    got = mirror.get("/v2/mirror/manifests/multi", headers={"Accept": OCI_INDEX})
    assert got.status_code == 200 and got.content == index
    assert mirror.get(f"/v2/mirror/manifests/{amd.digest}").status_code == 200
    assert mirror.get(f"/v2/mirror/manifests/{arm.digest}").status_code == 404
    # The listed platform must still be there ...
    r = _put_index(mirror, "mirror", _index([(make_image(seed="d"), AMD64), (arm, ARM64)]), "x")
    assert r.status_code == 400 and _error(r)["code"] == "MANIFEST_BLOB_UNKNOWN"
    # ... and so must a child without a platform (an attestation or artifact), as in Distribution.
    r = _put_index(mirror, "mirror", _index([(amd, AMD64), (arm, None)]), "y")
    assert r.status_code == 400 and _error(r)["detail"]["digest"] == arm.digest
    # Blobs of an image are checked as before.
    lonely = make_image(seed="e")
    r = mirror.put(
        "/v2/mirror/manifests/z", content=lonely.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and _error(r)["code"] == "MANIFEST_BLOB_UNKNOWN"


@pytest.mark.parametrize("mirror", ["linux/arm64/v8,linux/arm/v7"], indirect=True)
def test_platform_list_with_variants(mirror: httpx.Client) -> None:
    amd, arm, armv7 = (
        make_image(seed="a"),
        make_image(seed="b", arch="arm64"),
        make_image(seed="c", arch="arm"),
    )
    push_image(mirror, "var", arm)
    push_image(mirror, "var", armv7)
    assert (
        _put_index(mirror, "var", _index([(amd, AMD64), (arm, ARM64), (armv7, ARMV7)])).status_code
        == 201
    )
    # linux/arm/v6 is not linux/arm/v7: it may be missing.
    v6 = {"os": "linux", "architecture": "arm", "variant": "v6"}
    assert _put_index(mirror, "var", _index([(arm, ARM64), (amd, v6)]), "b").status_code == 201
    # A missing linux/arm/v7 child is refused.
    other = make_image(seed="f", arch="arm")
    r = _put_index(mirror, "var", _index([(arm, ARM64), (other, ARMV7)]), "c")
    assert r.status_code == 400 and _error(r)["detail"]["digest"] == other.digest


@pytest.mark.parametrize("mirror", ["none"], indirect=True)
def test_platforms_none_checks_no_child(mirror: httpx.Client) -> None:
    amd, arm = make_image(seed="a"), make_image(seed="b", arch="arm64")
    r = _put_index(mirror, "none", _index([(amd, AMD64), (arm, None)]))
    assert r.status_code == 201, r.text
    # An image's own blobs are still required.
    r = mirror.put(
        "/v2/none/manifests/img", content=amd.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 400 and _error(r)["code"] == "MANIFEST_BLOB_UNKNOWN"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("all", "all"),
        ("", "all"),
        ("NONE", "none"),
        (" linux/amd64 , linux/arm64/v8 ", "linux/amd64,linux/arm64/v8"),
        (["linux/arm/v7"], "linux/arm/v7"),
    ],
)
def test_platform_setting_values(value: str | list[str], expected: str) -> None:
    assert load_settings(None, index_platforms=value).index_platforms == expected


@pytest.mark.parametrize("value", ["linux", "linux/amd64/v8/extra", "Linux/AMD 64", ",", "a//b"])
def test_bad_platform_setting_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"index_platforms.*os/arch"):
        load_settings(None, index_platforms=value)


def test_bad_platform_setting_is_one_clear_line(tmp_path: Path) -> None:
    value = "linux/amd64/v8/extra"
    out = subprocess.run(
        [sys.executable, "-m", "trustyard", "serve", "--data-dir", str(tmp_path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
            "TRUSTYARD_INDEX_PLATFORMS": value,
        },
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "index_platforms" in out.stderr and "Traceback" not in out.stderr


# -- oversize manifests: the 413 reaches the client ---------------------------------------------
def _raw_put(
    server: ServerProcess,
    size: int,
    *,
    chunked: bool = False,
    request_line: str = "PUT /v2/big/manifests/v1",
    content_type: str = OCI_MANIFEST,
    extra: str = "",
) -> tuple[bytes, bool]:
    """Send a body of `size` bytes (a manifest PUT unless told) over a raw socket, writing all
    of it before reading.

    Returns the answer's head and whether the whole body could be written (no broken pipe).
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
        sock.sendall(
            f"{request_line} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{extra}"
            f"{framing}\r\n\r\n".encode()
        )
        block = b"x" * (1024 * 1024)
        sent_all = True
        try:
            for offset in range(0, size, len(block)):
                piece = block[: min(len(block), size - offset)]
                if chunked:
                    piece = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
                sock.sendall(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            sent_all = False
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                data = sock.recv(65536)
                if not data:
                    break
                head += data
        except ConnectionResetError:
            pass
        return head, sent_all


@pytest.mark.parametrize("mib", [5, 64])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_oversize_manifest_gets_413_not_a_broken_pipe(
    registry: ServerProcess, mib: int, chunked: bool
) -> None:
    head, sent_all = _raw_put(registry, mib * 1024 * 1024, chunked=chunked)
    assert sent_all, "the server closed while the client was still sending"
    assert head.startswith(b"HTTP/1.1 413 "), head[:200]


@pytest.mark.parametrize(
    ("request_line", "content_type", "mib"),
    [
        ("POST /v2/big/_trust/tuf/", "multipart/form-data; boundary=x", 20),
        ("PUT /extensions/v2/big/signatures/sha256:" + "a" * 64, "application/json", 5),
    ],
    ids=["trust-upload", "signature"],
)
def test_other_oversize_bodies_get_413_not_a_broken_pipe(
    registry: ServerProcess, request_line: str, content_type: str, mib: int
) -> None:
    """The trust server's uploads (16 MiB limit) and signature uploads drain the same way."""
    head, sent_all = _raw_put(
        registry, mib * 1024 * 1024, request_line=request_line, content_type=content_type
    )
    assert sent_all, "the server closed while the client was still sending"
    assert head.startswith(b"HTTP/1.1 413 "), head[:200]


def test_oversize_manifest_leaves_the_connection_usable(client: httpx.Client) -> None:
    """httpx reuses its connection: the next request after a drained 413 is answered normally."""
    r = client.put(
        "/v2/big/manifests/v1",
        content=b"x" * (LIMIT + 1),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 413 and _error(r)["code"] == "SIZE_INVALID"
    assert f"limit of {LIMIT} bytes" in _error(r)["message"]
    assert client.get("/v2/").status_code == 200
    assert client.get("/v2/big/manifests/v1").status_code == 404


def test_curl_with_expect_continue_gets_413_without_sending(
    registry: ServerProcess, tmp_path: Path
) -> None:
    body = tmp_path / "big.json"
    body.write_bytes(b"x" * (5 * 1024 * 1024))
    out = subprocess.run(
        [
            "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
            "-X", "PUT", "-H", f"Content-Type: {OCI_MANIFEST}", "--data-binary", f"@{body}",
            f"{registry.url}/v2/big/manifests/v1",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    status, uploaded = out.stdout.split()
    assert status == "413", out.stderr
    assert float(uploaded) < 5 * 1024 * 1024  # curl waited for 100-continue and sent nothing


@pytest.mark.slow
def test_endless_body_is_cut_off_at_the_bound(registry: ServerProcess) -> None:
    """Past the drain bound (256 MiB) the server answers 413 and closes instead of reading on."""
    started = time.monotonic()
    head, sent_all = _raw_put(registry, 300 * 1024 * 1024)
    assert head.startswith(b"HTTP/1.1 413 "), head[:200]
    assert b"connection: close" in head.lower()
    assert not sent_all
    assert time.monotonic() - started < 60


# -- blob bodies refused halfway: the answer reaches the client ---------------------------------
BLOB_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def small_blobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        tmp_path_factory.mktemp("small-blobs") / "data",
        extra_env={"TRUSTYARD_MAX_BLOB_BYTES": str(BLOB_LIMIT)},
    ).start()
    yield srv
    srv.stop()


def _upload_location(server: ServerProcess, repo: str) -> str:
    r = httpx.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=30)
    assert r.status_code == 202, r.text
    return str(r.headers["Location"])


@pytest.mark.parametrize("how", ["monolithic POST", "PATCH", "final PUT", "PATCH out of order"])
def test_refused_blob_body_gets_its_answer_not_a_broken_pipe(
    small_blobs: ServerProcess, how: str
) -> None:
    """8 MiB against a 1 MiB blob limit (and a chunk at the wrong offset): the server drops
    the rest of the body before answering, so the client reads the 413 (416)."""
    size, digest = 8 * 1024 * 1024, "sha256:" + "0" * 64
    ctype = "application/octet-stream"
    if how == "monolithic POST":
        line = f"POST /v2/blobs/x/blobs/uploads/?digest={digest}"
    elif how == "PATCH":
        line = f"PATCH {_upload_location(small_blobs, 'blobs/x')}"
    elif how == "final PUT":
        line = f"PUT {_upload_location(small_blobs, 'blobs/x')}?digest={digest}"
    else:
        location = _upload_location(small_blobs, "blobs/x")
        line = f"PATCH {location}"
        size = BLOB_LIMIT // 2
    if how == "PATCH out of order":
        head, sent_all = _raw_put(
            small_blobs,
            size,
            request_line=line,
            content_type=ctype,
            extra=f"Content-Range: 5-{4 + size}\r\n",
        )
        assert sent_all and head.startswith(b"HTTP/1.1 416 "), head[:200]
        return
    head, sent_all = _raw_put(small_blobs, size, request_line=line, content_type=ctype)
    assert sent_all, "the server closed while the client was still sending"
    assert head.startswith(b"HTTP/1.1 413 "), head[:200]
    # nothing of the refused blob became visible
    assert httpx.head(f"{small_blobs.url}/v2/blobs/x/blobs/{digest}", timeout=30).status_code == 404


def test_blob_within_the_limit_still_uploads(small_blobs: ServerProcess) -> None:
    data = b"y" * (BLOB_LIMIT - 1)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = httpx.post(
        f"{small_blobs.url}/v2/blobs/ok/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
