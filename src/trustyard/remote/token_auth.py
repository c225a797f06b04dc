"""The Docker token exchange, once, as an `httpx.Auth`: what the registry and trust clients share.

A request goes out with the `Authorization` header cached for its scope, if any. On a 401 the
`WWW-Authenticate` challenge is answered once: `Basic` with the credentials, or `Bearer
realm,service,scope` by a GET to the realm (`?scope=OURS&scope=THEIRS&service=…`, the credentials
as Basic when there are any) whose `token` (or `access_token`) becomes the bearer token. An unusable
challenge, or a 401 without one, is handed back to the caller as it is. Credentials never go over
plain HTTP to a host that is not this machine (unless `insecure`).

The flow does no I/O of its own: it yields the token request like any other. Under httpx's own
`Client(auth=…)`/`AsyncClient(auth=…)` that works as is (`requires_response_body`), but httpx then
reads every 401 body whole; `drive` runs the same flow over streamed sends instead, closing 401s
unread and reading the token answer under `TOKEN_BODY` (`remote/bounded.py`), which is how both
clients here use it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Generator
from typing import Any

import httpx

from trustyard.remote.bounded import (
    ERROR_BODY,
    TOKEN_BODY,
    BodyError,
    buffered,
    loads_json,
    read_body,
)
from trustyard.remote.credentials import Credentials, is_loopback, parse_challenge
from trustyard.remote.errors import RemoteError

Flow = Generator[httpx.Request, httpx.Response, None]
MAX_STEPS = 4  # request, token request, request again; one spare


class CredentialsMissing(RemoteError):
    """The server asked for credentials and there are none."""


class TokenRefused(RemoteError):
    """The token server answered 401/403: wrong credentials, or anonymous access refused."""

    def __init__(self, realm: str, host: str, user: str | None) -> None:
        who = "the credentials" if user is not None else "anonymous access (no credentials)"
        super().__init__(f"token server {realm} refused {who} for {host}")
        self.realm, self.host, self.user = realm, host, user


class TokenRequest(httpx.Request):
    """The GET to a challenge's realm, so that a driver can tell it from the request itself."""

    def __init__(
        self,
        realm: str,
        params: httpx.QueryParams,
        headers: dict[str, str],
        extensions: dict[str, Any],
    ) -> None:
        super().__init__("GET", realm, params=params, headers=headers, extensions=extensions)
        self.realm = realm


class TokenAuth(httpx.Auth):
    """Basic or bearer-token auth for one client, the header cached per scope.

    `scope` gives a request's token scope (`repository:NAME:ACTIONS`), or None; `drive` callers
    may pass the scope to `flow` directly instead.
    """

    requires_response_body = True  # only httpx's own drivers look at this; `drive` reads bounded

    def __init__(
        self,
        credentials: Credentials | None,
        *,
        scope: Callable[[httpx.Request], str | None] | None = None,
        insecure: bool = False,
        cleartext_hint: str = "",
        realm_near_host: bool = False,
    ) -> None:
        self.credentials = credentials
        self._realm_near_host = realm_near_host
        self._scope = scope
        self._insecure = insecure
        self._cleartext_hint = cleartext_hint
        self._headers: dict[str, str] = {}  # scope → Authorization header value

    def auth_flow(self, request: httpx.Request) -> Flow:
        return self.flow(request, self._scope(request) if self._scope else None)

    def flow(self, request: httpx.Request, scope: str | None) -> Flow:
        """Send `request` with the cached header; answer one 401 challenge and send it again."""
        cached = self._headers.get(scope or "")
        if cached:
            request.headers["Authorization"] = cached
        response = yield request
        if response.status_code != 401 or "www-authenticate" not in response.headers:
            return  # a 403 (insufficient_scope): a new token would grant no more
        scheme, params = parse_challenge(response.headers["www-authenticate"])
        host = request.url.netloc.decode()
        if scheme == "basic":
            header = self._basic(request.url, host)
        elif scheme == "bearer" and params.get("realm"):
            answer = yield self._token_request(request, params, scope, host)
            header = f"Bearer {self._token(answer, params['realm'], host)}"
        else:
            return
        self._headers[scope or ""] = header
        request.headers["Authorization"] = header
        yield request  # the caller closes the 401 unread (it may be endless)

    def _basic(self, url: httpx.URL, host: str) -> str:
        """The Basic header for `url`; never over plain HTTP to another machine."""
        if self.credentials is None:
            raise CredentialsMissing(
                f"{host} asks for credentials (Basic) and the auth file has none for {host}"
            )
        if url.scheme != "https" and not self._insecure and not is_loopback(url.netloc.decode()):
            raise RemoteError(
                f"refusing to send credentials over plain HTTP to {url.host}{self._cleartext_hint}"
            )
        return self.credentials.basic()

    def _token_request(
        self, request: httpx.Request, params: dict[str, str], scope: str | None, host: str
    ) -> TokenRequest:
        realm = params["realm"]
        realm_host = httpx.URL(realm).host
        if self.credentials and self._realm_near_host and not near(realm_host, request.url.host):
            raise RemoteError(
                f"{host} asks for a token from {realm_host}, which is not {request.url.host} nor "
                "a host of its domain; refusing to send it the credentials"
            )
        query = httpx.QueryParams()
        for s in dict.fromkeys(filter(None, (scope, params.get("scope")))):
            query = query.add("scope", s)
        if params.get("service"):
            query = query.add("service", params["service"])
        headers = {"Authorization": self._basic(httpx.URL(realm), host)} if self.credentials else {}
        timeout = request.extensions.get("timeout")
        return TokenRequest(realm, query, headers, {"timeout": timeout} if timeout else {})

    def _token(self, answer: httpx.Response, realm: str, host: str) -> str:
        if answer.status_code in (401, 403):
            raise TokenRefused(realm, host, self.credentials.username if self.credentials else None)
        if answer.status_code != 200:
            raise RemoteError(f"token server {realm} answered HTTP {answer.status_code}")
        try:
            body = loads_json(answer.content, f"token server {realm}'s answer")
            token = body.get("token") or body.get("access_token")
        except (BodyError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RemoteError(f"token server {realm} answered without a token")
        return token


def fetch_token_answer(http: httpx.Client, request: TokenRequest) -> httpx.Response:
    """Send a token request (no redirects) and read its answer under `TOKEN_BODY` (an error
    answer cut at `ERROR_BODY`)."""
    what = f"token server {request.realm}'s answer"
    try:
        response = http.send(request, stream=True)
        try:
            ok = response.status_code == 200
            body = read_body(response, TOKEN_BODY if ok else ERROR_BODY, what, truncate=not ok)
        finally:
            response.close()
    except httpx.HTTPError as exc:
        detail = f"{exc.__class__.__name__} {exc}".strip()
        raise RemoteError(f"token server {request.realm} failed: {detail}") from None
    except BodyError as exc:
        raise RemoteError(str(exc)) from None
    return buffered(response, body)


def drive(
    flow: Flow, send: Callable[[httpx.Request], httpx.Response], http: httpx.Client
) -> tuple[httpx.Response, int]:
    """Run an auth flow over streamed sends: `send` sends the request itself (streamed), token
    requests go through `http`. Answers the flow moves past are closed unread. Returns the last
    answer, still streamed (the caller reads it bounded and closes it), and how many times the
    request itself was sent (2: a challenge was answered)."""
    sent = next(flow)
    sends = 0
    for _ in range(MAX_STEPS):
        if isinstance(sent, TokenRequest):
            response = fetch_token_answer(http, sent)
        else:
            response = send(sent)
            sends += 1
        try:
            sent = flow.send(response)
        except StopIteration:
            return response, sends
        except BaseException:
            response.close()
            raise
        response.close()
    raise RemoteError(f"{sent.url.host} kept asking for authentication")


def near(realm_host: str, host: str) -> bool:
    """`realm_host` may receive `host`'s credentials: the same host, a subdomain or parent of it,
    or a sibling (auth.docker.io for registry-1.docker.io) under a parent of 2+ labels. A
    challenge is the server's word, so a realm elsewhere would get the password from a client
    that answers it blindly (a hijacked or redirected answer, a hostile upstream)."""
    a, b = realm_host.lower().rstrip("."), host.lower().rstrip(".")
    if not a or not b:
        return False
    if a == b:
        return True
    if _is_ip(a) or _is_ip(b):
        return False
    if a.endswith("." + b) or b.endswith("." + a):
        return True
    parent_a, parent_b = a.partition(".")[2], b.partition(".")[2]
    return parent_a == parent_b and parent_a.count(".") >= 1


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
