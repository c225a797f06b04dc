"""The registry client's auth flows and checks, against an in-process fake registry."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from trustyard.remote.credentials import load_credentials, parse_challenge
from trustyard.signing.errors import ReferenceNotFoundError, RemoteError
from trustyard.signing.registry_client import RegistryClient, RemoteRef

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"digest": "sha256:" + "a" * 64, "size": 2}, "layers": []}).encode()  # fmt: skip
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
HOST = "registry.example:5000"


def auth_file(tmp_path: Path, entry: dict[str, str], key: str = f"https://{HOST}") -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {key: entry}}))
    return path


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class TokenRegistry:
    """A registry with docker token auth: /v2/ answers 401 + Bearer challenge without a token."""

    def __init__(self) -> None:
        self.token_requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            self.token_requests.append(request)
            if request.headers.get("Authorization") != basic("alice", "s3cret"):
                return httpx.Response(401)
            return httpx.Response(200, json={"token": "T-" + request.url.params["scope"]})
        expected = "Bearer T-repository:team/app:pull,push"
        if request.headers.get("Authorization") != expected:
            challenge = (
                f'Bearer realm="https://{HOST}/token",service="trustyard",'
                'scope="repository:team/app:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge},
                                  json={"errors": [{"code": "UNAUTHORIZED", "message": "auth"}]})  # fmt: skip
        if request.method == "PUT":
            return httpx.Response(201, headers={"Docker-Content-Digest": DIGEST})
        return httpx.Response(200, content=MANIFEST, headers={
            "Content-Type": "application/vnd.oci.image.manifest.v1+json",
            "Docker-Content-Digest": DIGEST})  # fmt: skip


def test_bearer_token_flow_with_docker_config_credentials(tmp_path: Path) -> None:
    fake = TokenRegistry()
    creds = auth_file(tmp_path, {"auth": base64.b64encode(b"alice:s3cret").decode()})
    transport = httpx.MockTransport(fake)
    with RegistryClient(HOST, push=True, auth_file=creds, transport=transport) as client:
        got = client.get_manifest("team/app", "1.0")
        assert got.digest == DIGEST and got.doc["schemaVersion"] == 2
        assert client.put_manifest("team/app", "1.0", MANIFEST, got.media_type) == DIGEST
    # one token, fetched with Basic credentials, for our scope and the challenge's
    (req,) = fake.token_requests
    assert req.url.params["service"] == "trustyard"
    assert req.url.params.get_list("scope") == [
        "repository:team/app:pull,push",
        "repository:team/app:pull",
    ]


def test_token_server_refusing_credentials_is_a_clear_error(tmp_path: Path) -> None:
    creds = auth_file(tmp_path, {"username": "alice", "password": "wrong"})
    transport = httpx.MockTransport(TokenRegistry())
    with RegistryClient(HOST, auth_file=creds, transport=transport) as client:
        with pytest.raises(RemoteError, match="refused the credentials"):
            client.get_manifest("team/app", "1.0")


def test_basic_challenge_uses_config_credentials(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("Authorization") != basic("bob", "pw"):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
        return httpx.Response(200, content=MANIFEST, headers={"Docker-Content-Digest": DIGEST})

    creds = auth_file(tmp_path, {"auth": base64.b64encode(b"bob:pw").decode()}, key=HOST)
    transport = httpx.MockTransport(handler)
    with RegistryClient(HOST, auth_file=creds, transport=transport) as client:
        assert client.get_manifest("app", DIGEST).digest == DIGEST
    # without credentials for that host: says so
    other = auth_file(tmp_path, {"auth": base64.b64encode(b"bob:pw").decode()}, key="elsewhere")
    with RegistryClient(HOST, auth_file=other, transport=transport) as client:
        with pytest.raises(RemoteError, match=r"has none for registry\.example:5000"):
            client.get_manifest("app", "1.0")


def test_credentials_never_sent_in_clear_to_a_remote_host(tmp_path: Path) -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("Authorization", ""))
        return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    creds = auth_file(tmp_path, {"auth": base64.b64encode(b"bob:pw").decode()}, key=HOST)
    client = RegistryClient(
        HOST, plain_http=True, auth_file=creds, transport=httpx.MockTransport(handler)
    )
    with client, pytest.raises(RemoteError, match="refusing to send credentials over plain HTTP"):
        client.get_manifest("app", "1.0")
    assert sent == [""]


def test_lying_registry_is_caught() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/manifests/1.0"):
            return httpx.Response(
                200, content=MANIFEST + b" ", headers={"Docker-Content-Digest": DIGEST}
            )
        if "/blobs/" in request.url.path:
            return httpx.Response(200, content=b"{}")  # not the blob whose digest was asked
        return httpx.Response(200, content=MANIFEST)

    with RegistryClient(HOST, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RemoteError, match="does not match its digest"):
            client.get_manifest("app", "1.0")
        with pytest.raises(RemoteError, match="does not match its digest"):
            client.get_manifest("app", "sha256:" + "b" * 64)
        with pytest.raises(RemoteError, match="does not match its digest"):
            client.hash_blob("app", {"digest": "sha256:" + "a" * 64, "size": 2}, "sha384")


def test_not_found_is_reference_not_found() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "no"}]})

    with RegistryClient(HOST, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(
            ReferenceNotFoundError, match=r"app:9\.9 does not exist.*MANIFEST_UNKNOWN"
        ):
            client.get_manifest("app", "9.9")


def test_reference_and_challenge_parsing(tmp_path: Path) -> None:
    r = RemoteRef.parse("localhost:5000/team/app:1.0@sha256:" + "c" * 64)
    assert (r.host, r.repository, r.tag, r.digest) == (
        "localhost:5000",
        "team/app",
        "1.0",
        "sha256:" + "c" * 64,
    )
    assert RemoteRef.parse("127.0.0.1:5000/app").tag == "latest"
    assert RemoteRef.parse("[::1]:5000/app@sha256:" + "d" * 64).tag is None
    assert str(r) == "localhost:5000/team/app:1.0@sha256:" + "c" * 64
    for bad in ("app:1.0", "host:5000/App:1", "host/app:bad tag", "host/app@sha256:xyz"):
        with pytest.raises(RemoteError):
            RemoteRef.parse(bad)
    scheme, params = parse_challenge(
        'Bearer realm="https://a/token",service="svc",scope="repository:x:pull,push"'
    )
    assert scheme == "bearer" and params == {
        "realm": "https://a/token",
        "service": "svc",
        "scope": "repository:x:pull,push",
    }
    # config.json: keys with scheme and path match the host; an absent default file is anonymous
    assert load_credentials(HOST, auth_file(tmp_path, {"username": "u", "password": "p"},
                                            key=f"http://{HOST}/v1/")) is not None  # fmt: skip
    with pytest.raises(RemoteError, match="does not exist"):
        load_credentials(HOST, tmp_path / "absent.json")
