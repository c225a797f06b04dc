"""The token check's fast paths give the answers of the plain code they replace.

`AccessControl` remembers bearer checks that passed (per Authorization header, method and
path, until the token expires), `required_access` reads the route table itself, the
Authorization header is read without building a `Headers`, and the issuer's routes come after
the registry's. Each test here pins one of those to the behaviour it must keep.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from starlette.datastructures import Headers
from starlette.routing import Match, Route

from tests.auth.helpers import new_key
from trustyard.auth.keyring import TrustedKeys
from trustyard.auth.scopes import GuardedRoute
from trustyard.auth.scopes import Scope as AccessScope
from trustyard.auth.token_issuer import TokenIssuer
from trustyard.auth.token_verifier import TokenVerifier
from trustyard.config import AuthSettings, Settings, TokenAuthSettings
from trustyard.http import access, extensions, v2
from trustyard.http import trust_routes as trust_server
from trustyard.http.access import AccessControl, required_access
from trustyard.http.app import create_app
from trustyard.http.params import APPROVED_UPLOAD
from trustyard.wiring.auth import AuthRuntime

SERVICE, ISSUER = "reg", "iss"
REPO = "alice/app"
MANIFEST = f"/v2/{REPO}/manifests/latest"

ROUTES = [*trust_server.routes(), *v2.routes(), *extensions.routes()]
TABLE = access.RouteTable(ROUTES)

# (method, path, the scope it needs; "" = any valid identity): the route table's answers.
EXPECTED = [
    ("GET", "/v2/", ""),
    ("GET", "/v2", ""),
    ("GET", "/v2/_catalog", "registry:catalog:*"),
    ("GET", "/v2/_catalog/", ""),
    ("GET", "/v2/a/tags/list", "repository:a:pull"),
    ("GET", "/v2/a/b/tags/list", "repository:a/b:pull"),
    ("GET", "/v2/a/tags/listing", ""),
    ("GET", "/v2/a/referrers/sha256:abc", "repository:a:pull"),
    ("GET", "/v2/a/referrers/", ""),
    ("HEAD", "/v2/a/manifests/latest", "repository:a:pull"),
    ("GET", "/v2/a/manifests/latest\n", "repository:a:pull"),
    ("PUT", "/v2/a/manifests/latest", "repository:a:pull,push"),
    ("DELETE", "/v2/a/manifests/latest", "repository:a:delete"),
    ("PATCH", "/v2/a/manifests/latest", ""),  # no such route: 405 for anyone with a token
    ("GET", "/v2/a/manifests/x/y", ""),
    ("GET", "/v2/a/manifests/", ""),
    ("GET", "/v2/a/b/c/manifests/sha256:0123", "repository:a/b/c:pull"),
    ("POST", "/v2/a/blobs/uploads", "repository:a:pull,push"),
    ("POST", "/v2/a/blobs/uploads/", "repository:a:pull,push"),
    ("GET", "/v2/a/blobs/uploads/1234-abcd", "repository:a:pull,push"),
    ("PATCH", "/v2/a/blobs/uploads/1234-abcd", "repository:a:pull,push"),
    ("PUT", "/v2/a/blobs/uploads/1234-abcd", "repository:a:pull,push"),
    ("DELETE", "/v2/a/blobs/uploads/1234-abcd", "repository:a:pull,push"),
    ("GET", "/v2/a/blobs/sha256:abc", "repository:a:pull"),
    ("HEAD", "/v2/a/blobs/uploads/blobs/sha256:abc", "repository:a/blobs/uploads:pull"),
    ("DELETE", "/v2/a/blobs/sha256:abc", "repository:a:delete"),
    ("GET", "/v2/a/_trust/tuf/root.json", "repository:a:pull"),
    ("POST", "/v2/a/_trust/tuf/", "repository:a:pull,push"),
    ("DELETE", "/v2/a/_trust/tuf/", "repository:a:*"),
    ("GET", "/v2/a/_trust/tuf/timestamp.key", "repository:a:pull,push"),
    ("GET", "/v2/a/b/_trust/tuf/snapshot.key", "repository:a/b:pull,push"),
    ("POST", "/v2/a/_trust/tuf/timestamp.key", "repository:a:*"),
    ("DELETE", "/v2/a/_trust/tuf/timestamp.key", "repository:a:*"),
    ("GET", "/v2/_trust/changefeed", "registry:catalog:*"),
    ("GET", "/v2/a/_trust/changefeed", "repository:a:pull"),
    ("GET", "/extensions/v2/a/signatures/sha256:abc", "repository:a:pull"),
    ("PUT", "/extensions/v2/a/b/signatures/sha256:abc", "repository:a/b:pull,push"),
    ("DELETE", "/extensions/v2/a/signatures/sha256:abc", "repository:a:delete"),
    ("GET", "/extensions/v2/a/signatures/", ""),
    ("GET", "/v2/manifests/latest", ""),
]


@pytest.mark.parametrize(("method", "path", "expected"), EXPECTED)
def test_required_access_comes_from_the_route_table(method: str, path: str, expected: str) -> None:
    scope = {"type": "http", "method": method, "path": path, "root_path": ""}
    _, needed, _ = required_access(TABLE, scope)
    assert " ".join(str(s) for s in needed) == expected


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"])
def test_the_filtered_match_is_the_routers_match(method: str) -> None:
    """`RouteTable.match` skips routes by method and literal text: same answer as trying
    every route in order with Starlette's `Route.matches`, as the router does."""
    paths = [p for _, p, _ in EXPECTED] + [
        "/v2/a/_trust/tuf/x/timestamp.key",
        "/v2/a/_trust/tuf/timestamp.key/",
        "/v2/a/_trust/tuf/b/_trust/tuf/timestamp.key",
        "/v2/a/blobs/uploads/blobs/uploads/x",
        "/v2/a/manifests/b/manifests/c",
        "/v2//_trust/changefeed",
        "/v2/_trust/changefeed/",
        "/extensions/v2/a/signatures/b/signatures/c",
    ]
    for path in paths:
        scope = {"type": "http", "method": method, "path": path, "root_path": ""}
        expected: tuple[object, object] = (None, {})
        for route in ROUTES:
            match, child = route.matches(scope)
            if match is Match.FULL:
                expected = (route, child["path_params"])
                break
        assert TABLE.match(scope) == expected, path


def test_every_registry_and_trust_route_declares_its_rights(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth=AuthSettings(mode="token"))
    app = create_app(settings)
    guarded = [r for r in app.routes if isinstance(r, Route) and access.guarded_prefix(r.path)]
    assert guarded and all(isinstance(r, GuardedRoute) for r in guarded)
    with pytest.raises(TypeError, match="declares no rights"):
        access.RouteTable([Route("/v2/x", v2.base)])


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [(b"host", b"x")],
        [(b"authorization", b"Bearer abc")],
        [(b"authorization", b"Bearer first"), (b"authorization", b"Bearer second")],
        [(b"Authorization", b"Bearer upper"), (b"authorization", b"Bearer lower")],
        [(b"accept", b"*/*"), (b"authorization", b"Bearer \xe9\xff")],
        [(b"authorization", b"")],
    ],
)
def test_header_lookup_answers_as_starlette_headers(headers: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "headers": list(headers)}
    expected = Headers(scope={"type": "http", "headers": list(headers)}).get("authorization", "")
    assert access._header(scope, b"authorization") == expected


# -- AccessControl with a remembered bearer check ----------------------------------------------


class CountingVerifier(TokenVerifier):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def verify(self, token: str) -> Any:
        self.calls += 1
        return super().verify(token)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def runtime_for(verifier: TokenVerifier) -> AuthRuntime:
    settings = AuthSettings(
        mode="token",
        token=TokenAuthSettings(service=SERVICE, issuer=ISSUER, realm="https://a.example/token"),
    )
    none = cast(Any, None)
    return AuthRuntime(settings, none, none, none, verifier, None)


class Env:
    """One AccessControl in front of a recording app, with a key, a clock and a verifier."""

    def __init__(self, trust_key: bool = True) -> None:
        self.key = new_key()
        self.clock = Clock()
        self.verifier = self.make_verifier(trust_key)
        self.runtime = runtime_for(self.verifier)
        self.state = SimpleNamespace(auth=self.runtime)
        self.seen: list[dict[str, Any]] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            self.seen.append(dict(scope))
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        self.control = AccessControl(app, routes=ROUTES)

    def make_verifier(self, trust_key: bool = True) -> CountingVerifier:
        trusted = TrustedKeys()
        trusted.add_certificates((self.key if trust_key else new_key()).chain, "test")
        return CountingVerifier(trusted, issuer=ISSUER, service=SERVICE, clock=self.clock)

    def token(self, *scopes: AccessScope, ttl: int = 300) -> str:
        issuer = TokenIssuer(self.key, ISSUER, ttl_seconds=ttl)
        return issuer.issue("alice", SERVICE, list(scopes)).token

    async def request(
        self, method: str, path: str, authorization: str | None, query: bytes = b""
    ) -> tuple[int, dict[str, str]]:
        headers = [(b"host", b"reg.example"), (b"accept", b"*/*")]
        if authorization is not None:
            headers.append((b"authorization", authorization.encode("latin-1")))
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query,
            "headers": headers,
            "scheme": "http",
            "app": SimpleNamespace(state=self.state),
        }
        answer: dict[str, Any] = {}

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                answer["headers"] = {
                    k.decode("latin-1"): v.decode("latin-1") for k, v in message["headers"]
                }

        await self.control(scope, receive, send)
        return answer["status"], answer["headers"]


PULL = AccessScope("repository", REPO, ("pull",))
PUSH = AccessScope("repository", REPO, ("pull", "push"))


async def test_a_passed_check_is_remembered_for_the_same_request() -> None:
    env = Env()
    bearer = f"Bearer {env.token(PULL)}"
    for _ in range(5):
        assert (await env.request("HEAD", MANIFEST, bearer))[0] == 200
    assert env.verifier.calls == 1
    assert len(env.seen) == 5


async def test_a_remembered_check_still_ends_when_the_token_expires() -> None:
    env = Env()
    bearer = f"Bearer {env.token(PULL, ttl=60)}"
    assert (await env.request("HEAD", MANIFEST, bearer))[0] == 200
    env.clock.now += 60 + env.verifier.leeway - 5  # within the leeway: still good
    assert (await env.request("HEAD", MANIFEST, bearer))[0] == 200
    env.clock.now += 10
    status, headers = await env.request("HEAD", MANIFEST, bearer)
    assert status == 401
    assert 'error="invalid_token"' in headers["www-authenticate"]


async def test_what_was_remembered_grants_nothing_else() -> None:
    env = Env()
    bearer = f"Bearer {env.token(PULL)}"
    assert (await env.request("GET", MANIFEST, bearer))[0] == 200
    # same path, other methods: push and delete are not granted
    assert (await env.request("PUT", MANIFEST, bearer))[0] == 403
    assert (await env.request("DELETE", MANIFEST, bearer))[0] == 403
    # same method, another repository
    assert (await env.request("GET", "/v2/bob/app/manifests/latest", bearer))[0] == 403
    # same request, other credentials
    assert (await env.request("GET", MANIFEST, None))[0] == 401
    assert (await env.request("GET", MANIFEST, "Basic YWxpY2U6cHc="))[0] == 401
    other = Env()  # a token from an untrusted key
    assert (await env.request("GET", MANIFEST, f"Bearer {other.token(PULL)}"))[0] == 401
    # the remembered one still works, spelled differently too
    assert (await env.request("GET", MANIFEST, bearer))[0] == 200
    assert (await env.request("GET", MANIFEST, bearer.replace("Bearer ", "bearer  ")))[0] == 200


async def test_refusals_are_not_remembered() -> None:
    env = Env()
    bearer = f"Bearer {env.token(PULL)}"
    for _ in range(3):
        assert (await env.request("PUT", MANIFEST, bearer))[0] == 403
    assert env.verifier.calls == 3
    assert not env.control._allowed


async def test_posts_are_checked_in_full_every_time() -> None:
    env = Env()
    bearer = f"Bearer {env.token(PUSH)}"
    query = b"mount=sha256%3Aabc&from=private%2Frepo"
    for _ in range(3):
        status, _ = await env.request("POST", f"/v2/{REPO}/blobs/uploads/", bearer, query)
        assert status == 200
        # no pull on `from`: the mount is dropped every time, not only the first
        assert env.seen[-1][APPROVED_UPLOAD].mount is None
    assert env.verifier.calls == 3


async def test_a_new_runtime_forgets_what_the_old_one_allowed() -> None:
    env = Env()
    bearer = f"Bearer {env.token(PULL)}"
    assert (await env.request("HEAD", MANIFEST, bearer))[0] == 200
    # a new lifespan whose verifier no longer trusts the key
    env.state.auth = runtime_for(env.make_verifier(trust_key=False))
    assert (await env.request("HEAD", MANIFEST, bearer))[0] == 401


async def test_the_remembered_checks_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "ALLOWED_CACHE_SIZE", 3)
    env = Env()
    bearer = f"Bearer {env.token(PULL)}"
    for i in range(10):
        path = f"/v2/{REPO}/manifests/t{i}"
        assert (await env.request("HEAD", path, bearer))[0] == 200
        assert len(env.control._allowed) <= 3


def test_token_routes_come_after_the_registry_routes(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth=AuthSettings(mode="token"))
    paths = [r.path for r in create_app(settings).routes if isinstance(r, Route)]
    assert paths[-3:] == ["/auth/token", "/auth/token", "/auth/jwks.json"]
    assert paths.index("/v2/{name:path}/manifests/{reference}") < paths.index("/auth/token")
