"""The one Docker token exchange (remote/token_auth.py) against a small real registry + token
server: the same app as WSGI (the sync `drive` both clients use) and ASGI (httpx's AsyncClient)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trustyard.remote.credentials import Credentials
from trustyard.remote.errors import RemoteError
from trustyard.remote.token_auth import CredentialsMissing, TokenAuth, TokenRefused, drive

ALICE = Credentials("alice", "s3cret")


@dataclass
class Server:
    """`/v2/...` wants `Bearer T:<scopes>` (or Basic, with `basic=True`); `/token` hands out
    tokens for alice's password, listing every scope asked for."""

    basic: bool = False
    token_status: int = 200
    token_body: bytes | None = None
    seen: list[tuple[str, str, dict[str, list[str]], str]] = field(default_factory=list)

    def respond(
        self, method: str, path: str, query: str, auth: str
    ) -> tuple[int, dict[str, str], bytes]:
        params = parse_qs(query)
        self.seen.append((method, path, params, auth))
        if path == "/token":
            if auth not in ("", ALICE.basic()):
                return 401, {}, b""
            if self.token_body is not None:
                return self.token_status, {}, self.token_body
            token = "T:" + " ".join(params.get("scope", []))
            return self.token_status, {}, json.dumps({"token": token}).encode()
        repo = path.split("/manifests/")[0][len("/v2/") :]
        want = ALICE.basic() if self.basic else f"Bearer T:repository:{repo}:pull"
        if auth.startswith(want):
            return 200, {}, b"{}"
        challenge = (
            'Basic realm="registry"'
            if self.basic
            else f'Bearer realm="http://127.0.0.1/token",service="reg",scope="repository:{repo}:pull"'
        )
        return 401, {"WWW-Authenticate": challenge}, b'{"errors":[]}'

    def wsgi(self, environ: dict[str, Any], start: Any) -> Iterable[bytes]:
        status, headers, body = self.respond(
            environ["REQUEST_METHOD"],
            environ["PATH_INFO"],
            environ.get("QUERY_STRING", ""),
            environ.get("HTTP_AUTHORIZATION", ""),
        )
        start(f"{status} X", [*headers.items(), ("Content-Length", str(len(body)))])
        return [body]

    def asgi(self) -> Starlette:
        async def any_path(request: Request) -> Response:
            status, headers, body = self.respond(
                request.method,
                request.url.path,
                request.url.query,
                request.headers.get("authorization", ""),
            )
            return Response(body, status, headers)

        return Starlette(routes=[Route("/{path:path}", any_path, methods=["GET", "HEAD", "PUT"])])


def get(server: Server, auth: TokenAuth, url: str, scope: str | None) -> httpx.Response:
    """One GET driven as both clients drive it: streamed, token answers read bounded."""
    with httpx.Client(transport=httpx.WSGITransport(app=server.wsgi)) as http:
        request = http.build_request("GET", url)
        response, _ = drive(auth.flow(request, scope), lambda r: http.send(r, stream=True), http)
        response.read()
        response.close()
        return response


def test_bearer_token_fetched_once_per_scope_with_basic_credentials() -> None:
    server, auth = Server(), TokenAuth(ALICE)
    url = "http://127.0.0.1/v2/team/app/manifests/1"
    assert get(server, auth, url, "repository:team/app:pull,push").status_code == 200
    assert get(server, auth, url, "repository:team/app:pull,push").status_code == 200
    tokens = [s for s in server.seen if s[1] == "/token"]
    assert len(tokens) == 1  # the second request reused the cached token
    _, _, params, basic = tokens[0]
    assert params == {
        "scope": ["repository:team/app:pull,push", "repository:team/app:pull"],
        "service": ["reg"],
    }
    assert basic == ALICE.basic()
    assert [s[1] for s in server.seen] == [
        "/v2/team/app/manifests/1",
        "/token",
        "/v2/team/app/manifests/1",
        "/v2/team/app/manifests/1",
    ]


def test_basic_challenge_and_the_cleartext_rule() -> None:
    server = Server(basic=True)
    assert (
        get(server, TokenAuth(ALICE), "http://127.0.0.1/v2/a/manifests/1", "s").status_code == 200
    )
    with pytest.raises(RemoteError, match=r"plain HTTP to reg\.example; use HTTPS"):
        get(
            server,
            TokenAuth(ALICE, cleartext_hint="; use HTTPS"),
            "http://reg.example/v2/a/manifests/1",
            "s",
        )
    assert server.seen[-1][3] == ""  # nothing was sent with credentials
    insecure = TokenAuth(ALICE, insecure=True)
    assert get(server, insecure, "http://reg.example/v2/a/manifests/1", "s").status_code == 200
    with pytest.raises(CredentialsMissing, match="asks for credentials"):
        get(server, TokenAuth(None), "http://127.0.0.1/v2/a/manifests/1", "s")


def test_token_server_refusals_and_bad_answers() -> None:
    url = "http://127.0.0.1/v2/a/manifests/1"
    with pytest.raises(TokenRefused, match=r"refused the credentials for 127\.0\.0\.1") as info:
        get(Server(), TokenAuth(Credentials("alice", "wrong")), url, None)
    assert info.value.user == "alice" and "wrong" not in str(info.value)
    with pytest.raises(RemoteError, match="answered HTTP 500"):
        get(Server(token_status=500), TokenAuth(ALICE), url, None)
    with pytest.raises(RemoteError, match="answered without a token"):
        get(Server(token_body=b'{"expires_in": 60}'), TokenAuth(ALICE), url, None)
    with pytest.raises(RemoteError, match="larger than the 1048576 byte limit"):
        get(Server(token_body=b" " * (2 << 20)), TokenAuth(ALICE), url, None)
    # anonymous: the realm is asked without credentials, and the scope still comes from the flow
    server = Server()
    assert get(server, TokenAuth(None), url, None).status_code == 200
    assert server.seen[1][3] == "" and server.seen[1][2]["scope"] == ["repository:a:pull"]


async def test_httpx_async_client_runs_the_same_flow() -> None:
    server = Server()
    auth = TokenAuth(ALICE, scope=lambda r: "repository:team/app:pull")
    transport = httpx.ASGITransport(app=server.asgi())
    async with httpx.AsyncClient(transport=transport, auth=auth) as client:
        first = await client.get("http://127.0.0.1/v2/team/app/manifests/1")
        second = await client.get("http://127.0.0.1/v2/team/app/manifests/2")
    assert (first.status_code, second.status_code) == (200, 200)
    assert [s[1] for s in server.seen].count("/token") == 1
    assert base64.b64decode(server.seen[1][3].split()[1]) == b"alice:s3cret"
