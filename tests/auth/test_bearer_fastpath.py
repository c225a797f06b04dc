"""The token check's fast paths give the answers of the plain code they replace.

`AccessControl` remembers bearer checks that passed (per Authorization header, method and
path, until the token expires), `required_access` filters its regexes by substring, the
Authorization header is read without building a `Headers`, and the issuer's routes come after
the registry's. Each test here pins one of those to the behaviour it must keep.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from starlette.datastructures import Headers
from starlette.routing import Route

from tests.auth.helpers import new_key
from trustyard.auth.runtime import AuthRuntime
from trustyard.auth.scopes import Scope as AccessScope
from trustyard.auth.tokens import TokenIssuer, TokenVerifier, TrustedKeys
from trustyard.config import AuthSettings, Settings, TokenAuthSettings
from trustyard.http import access
from trustyard.http.access import AccessControl, required_access
from trustyard.http.app import create_app

SERVICE, ISSUER = "reg", "iss"
REPO = "alice/app"
MANIFEST = f"/v2/{REPO}/manifests/latest"

# The patterns as they were before the substring filter: required_access must agree with them.
_PLAIN = [
    (r"^/v2/(?P<name>.+)/_trust/tuf/.*$", "trust"),
    (r"^/v2/(?P<name>.+)/tags/list$", "read"),
    (r"^/v2/(?P<name>.+)/referrers/[^/]+$", "read"),
    (r"^/v2/(?P<name>.+)/manifests/[^/]+$", "object"),
    (r"^/v2/(?P<name>.+)/blobs/uploads(?:/[^/]*)?$", "upload"),
    (r"^/v2/(?P<name>.+)/blobs/[^/]+$", "object"),
    (r"^/extensions/v2/(?P<name>.+)/signatures/[^/]+$", "signatures"),
]


def plain_required_access(method: str, path: str) -> list[AccessScope]:
    if path == "/v2/_catalog":
        return [access.CATALOG]
    for pattern, kind in _PLAIN:
        m = re.match(pattern, path)
        if m is None:
            continue
        get = method in ("GET", "HEAD")
        if kind == "read":
            actions: tuple[str, ...] = ("pull",)
        elif kind in ("upload", "signatures"):
            actions = ("pull",) if kind == "signatures" and get else ("pull", "push")
            if kind == "signatures" and method == "DELETE":
                actions = ("delete",)
        elif kind == "trust":
            actions = ("pull",) if get else ("*",) if method == "DELETE" else ("pull", "push")
        else:
            actions = ("pull",) if get else ("delete",) if method == "DELETE" else ("pull", "push")
        return [AccessScope("repository", m.group("name"), actions)]
    return []


PATHS = [
    "/v2/",
    "/v2",
    "/v2/_catalog",
    "/v2/_catalog/",
    "/v2/a/tags/list",
    "/v2/a/b/tags/list",
    "/v2/a/tags/list\n",
    "/v2/a/tags/listing",
    "/v2/a/referrers/sha256:abc",
    "/v2/a/referrers/",
    "/v2/a/manifests/latest",
    "/v2/a/manifests/latest\n",
    "/v2/a\nb/manifests/latest",
    "/v2/a/manifests/x/y",
    "/v2/a/manifests/",
    "/v2/a/b/c/manifests/sha256:0123",
    "/v2/a/blobs/uploads",
    "/v2/a/blobs/uploads/",
    "/v2/a/blobs/uploads/1234-abcd",
    "/v2/a/blobs/uploads/1234/extra",
    "/v2/a/blobs/sha256:abc",
    "/v2/a/blobs/uploads/blobs/sha256:abc",
    "/v2/a/manifests/blobs/sha256:abc",
    "/v2/a/tags/list/manifests/latest",
    "/v2/a/_trust/tuf/root.json",
    "/v2/a/_trust/tuf/",
    "/v2/a/_trust/tuf/x/manifests/y",
    "/v2/_trust/changefeed",
    "/v2/a/_trust/changefeed",
    "/extensions/v2/a/signatures/sha256:abc",
    "/extensions/v2/a/b/signatures/sha256:abc",
    "/extensions/v2/a/signatures/",
    "/v2//manifests/latest",
    "/v2/manifests/latest",
    "/other/a/manifests/latest",
]


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"])
def test_required_access_agrees_with_the_plain_regex_walk(method: str) -> None:
    for path in PATHS:
        assert required_access(method, path) == plain_required_access(method, path), path


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

        self.control = AccessControl(app)

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
        assert env.seen[-1]["query_string"] == b""
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
