"""The trust client's credentials and challenge handling, against an in-process fake server."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import pytest

from trustyard.trust.client.config import ClientConfig
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.keys import KeyStore
from trustyard.trust.client.repository import TrustClient
from trustyard.trust.client.transport import trust_credentials


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_from_notary_auth_then_docker_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {"trust.example:4443": {"auth": basic("d", "p")}}}))
    monkeypatch.delenv("NOTARY_AUTH", raising=False)
    creds = trust_credentials("https://trust.example:4443", config)
    assert creds is not None and (creds.username, creds.password) == ("d", "p")
    assert trust_credentials("https://other.example", config) is None
    monkeypatch.setenv("NOTARY_AUTH", basic("n", "secret:with:colons"))
    creds = trust_credentials("https://trust.example:4443", config)
    assert creds is not None and (creds.username, creds.password) == ("n", "secret:with:colons")
    for bad in (base64.b64encode(b"no-colon").decode(), "not base64!"):
        monkeypatch.setenv("NOTARY_AUTH", bad)
        with pytest.raises(TrustError, match="NOTARY_AUTH is not base64 of user:password"):
            trust_credentials("https://trust.example:4443", config)


def fake_server(requests: list[httpx.Request]) -> httpx.MockTransport:
    """401 with a Bearer challenge unless the request carries the token the realm hands out
    for basic(alice, pw) and the scope the client asked for."""

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        auth = request.headers.get("authorization", "")
        if request.url.path == "/auth/token":
            if auth != "Basic " + basic("alice", "pw"):
                return httpx.Response(401)
            scope = request.url.params.get_list("scope")
            return httpx.Response(200, json={"token": "tok:" + " ".join(scope)})
        gun = request.url.path.split("/_trust/")[0][len("/v2/") :]
        if auth == f"Bearer tok:repository:{gun}:pull":
            return httpx.Response(404, json={"errors": [{"code": "METADATA_NOT_FOUND"}]})
        challenge = (
            f'Bearer realm="{request.url.scheme}://{request.url.netloc.decode()}/auth/token",'
            f'service="trustyard",scope="repository:{gun}:pull"'
        )
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    return httpx.MockTransport(handle)


def client(tmp_path: Path, server: str, transport: httpx.MockTransport) -> TrustClient:
    config = ClientConfig(trust_dir=tmp_path / "trust", server=server)
    return TrustClient(config, KeyStore(config.trust_dir, lambda what, creating: None),
                       transport=transport)  # fmt: skip


def test_bearer_challenge_is_followed_and_the_token_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTARY_AUTH", basic("alice", "pw"))
    seen: list[httpx.Request] = []
    with client(tmp_path, "http://127.0.0.1:5000", fake_server(seen)) as c:
        assert c.get_file("example.com/app", "root") is None  # 404 once authorised
        assert c.get_file("example.com/app", "targets") is None
    paths = [r.url.path for r in seen]
    assert paths == [
        "/v2/example.com/app/_trust/tuf/root.json",
        "/auth/token",
        "/v2/example.com/app/_trust/tuf/root.json",
        "/v2/example.com/app/_trust/tuf/targets.json",  # the cached token, no new challenge
    ]
    assert seen[1].url.params.get_list("scope") == ["repository:example.com/app:pull"]


def test_wrong_password_and_cleartext_to_a_remote_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTARY_AUTH", basic("alice", "wrong"))
    with client(tmp_path, "http://127.0.0.1:5000", fake_server([])) as c:
        with pytest.raises(TrustError, match="refused user alice") as info:
            c.get_file("example.com/app", "root")
        assert "wrong" not in str(info.value)
    monkeypatch.setenv("NOTARY_AUTH", basic("alice", "pw"))
    seen: list[httpx.Request] = []
    with client(tmp_path, "http://trust.example", fake_server(seen)) as c:
        with pytest.raises(TrustError, match="refusing to send credentials over plain HTTP"):
            c.get_file("example.com/app", "root")
    assert not any("authorization" in r.headers for r in seen)
