"""ASGI access control for `/v2/…`: Basic (htpasswd mode) or Bearer tokens (token mode).

Routes map to actions as in Distribution: GET/HEAD pull; POST/PUT/PATCH pull+push; DELETE
delete; `/v2/_catalog` needs `registry:catalog:*`; `/v2/` needs any valid identity. A
cross-repository mount is only attempted when the token grants pull on `from`; a mount without
`from` is turned into a plain upload in token mode (we cannot tell whether the caller may read
some repository holding the blob). Refusals render through `http.errors` with a
`WWW-Authenticate` challenge; the log line says why, never the credential.
"""

from __future__ import annotations

import hashlib
import re
import time
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from trustyard.auth.runtime import AuthRuntime
from trustyard.auth.scopes import Scope as AccessScope
from trustyard.auth.scopes import covers, format_scope_param
from trustyard.auth.server import login_failed, parse_basic, rate_limited
from trustyard.auth.tokens import TokenRejected, VerifiedToken
from trustyard.auth.users import AuthFailed, RateLimited
from trustyard.http.errors import error_response
from trustyard.oci.errors import ErrorCode, RegistryError

log = structlog.get_logger("trustyard.auth")

_PULL: tuple[str, ...] = ("pull",)
_PUSH: tuple[str, ...] = ("pull", "push")
_DELETE: tuple[str, ...] = ("delete",)
# (pattern, kind, a substring every match contains): the substring test is a cheap filter run
# before the regex (a path lacking it cannot match), so a request tries one regex, not seven.
_ROUTES: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"^/v2/(?P<name>.+)/_trust/tuf/.*$"), "trust", "/_trust/tuf/"),
    (re.compile(r"^/v2/(?P<name>.+)/tags/list$"), "read", "/tags/list"),
    (re.compile(r"^/v2/(?P<name>.+)/referrers/[^/]+$"), "read", "/referrers/"),
    (re.compile(r"^/v2/(?P<name>.+)/manifests/[^/]+$"), "object", "/manifests/"),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads(?:/[^/]*)?$"), "upload", "/blobs/uploads"),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/[^/]+$"), "object", "/blobs/"),
    # containers "signatures" extension API (http/extensions.py): GET pull, PUT push, DELETE
    # delete.
    (re.compile(r"^/extensions/v2/(?P<name>.+)/signatures/[^/]+$"), "signatures", "/signatures/"),
]
CATALOG = AccessScope("registry", "catalog", ("*",))
# Bearer checks that passed, by (Authorization header, method, path): see AccessControl._bearer.
ALLOWED_CACHE_SIZE = 1024


def required_access(method: str, path: str) -> list[AccessScope]:
    """The scopes a request needs (empty: any authenticated identity will do)."""
    if path == "/v2/_catalog":
        return [CATALOG]
    for pattern, kind, marker in _ROUTES:
        if marker not in path:
            continue
        m = pattern.match(path)
        if m is None:
            continue
        name = m.group("name")
        if kind == "read":
            actions = _PULL
        elif kind in ("upload", "signatures"):
            actions = _PULL if kind == "signatures" and method in ("GET", "HEAD") else _PUSH
            if kind == "signatures" and method == "DELETE":
                actions = _DELETE
        elif kind == "trust":
            actions = (
                _PULL if method in ("GET", "HEAD") else ("*",) if method == "DELETE" else _PUSH
            )
        else:
            actions = (
                _PULL if method in ("GET", "HEAD") else _DELETE if method == "DELETE" else _PUSH
            )
        return [AccessScope("repository", name, actions)]
    return []


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AccessControl:
    """Plain ASGI middleware (no body buffering); a no-op unless auth mode is htpasswd/token."""

    def __init__(self, app: ASGIApp, runtime: AuthRuntime | None = None) -> None:
        self.app = app
        self.runtime = runtime
        self._basic_ok: dict[bytes, float] = {}
        self._allowed: dict[tuple[bytes | None, str, str], VerifiedToken] = {}
        self._allowed_runtime: AuthRuntime | None = None

    def _runtime(self, scope: Scope) -> AuthRuntime | None:
        if self.runtime is not None:
            return self.runtime
        app = scope.get("app")
        runtime: AuthRuntime | None = getattr(getattr(app, "state", None), "auth", None)
        return runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/v2", "/extensions/v2/")):
            await self.app(scope, receive, send)
            return
        runtime = self._runtime(scope)
        if runtime is None or runtime.settings.mode == "none":
            await self.app(scope, receive, send)
            return
        try:
            if runtime.settings.mode == "htpasswd":
                await self._basic(runtime, scope)
            else:
                self._bearer(runtime, scope)
        except RegistryError as exc:
            response = error_response(exc, scope["method"])
            if scope["path"] == "/v2/":
                # containers/image pings /v2/ without credentials and reads this header from
                # the 401: without it, signatures would go to a local lookaside directory.
                response.headers["X-Registry-Supports-Signatures"] = "1"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    # -- htpasswd (Basic) ----------------------------------------------------------------------
    async def _basic(self, runtime: AuthRuntime, scope: Scope) -> None:
        settings = runtime.settings
        header = self._authorization(runtime, scope)
        creds = parse_basic(header) if header else None
        if creds is None:
            raise RegistryError(
                ErrorCode.UNAUTHORIZED,
                "authentication required: log in with your registry username and password",
                headers={"WWW-Authenticate": f"Basic realm={_quote(settings.basic_realm)}"},
            )
        # Successful credentials are remembered (as a hash) for a minute: one bcrypt per client
        # per minute instead of one per request.
        key = hashlib.sha256(header.encode()).digest()
        now = time.monotonic()
        if self._basic_ok.get(key, 0.0) > now:
            return
        client = scope["client"][0] if scope.get("client") else "unknown"
        try:
            await runtime.accounts.authenticate(creds[0], creds[1], client)
        except RateLimited as exc:
            log.warning("login_rate_limited", account=creds[0][:64], client=client)
            raise rate_limited(exc) from None
        except AuthFailed as exc:
            log.warning("login_failed", reason=exc.reason, client=client)
            raise login_failed(settings.basic_realm) from None
        if len(self._basic_ok) > 10_000:
            self._basic_ok.clear()
        self._basic_ok[key] = now + 60

    # -- token (Bearer) ------------------------------------------------------------------------
    def _authorization(self, runtime: AuthRuntime, scope: Scope) -> str:
        header = _header(scope, b"authorization")
        limit = runtime.settings.max_authorization_bytes
        if len(header) > limit:
            raise RegistryError(
                ErrorCode.UNAUTHORIZED,
                f"Authorization header of {len(header)} bytes is larger than the limit of {limit}",
            )
        return header

    def _challenge(
        self, runtime: AuthRuntime, scope: Scope, needed: list[AccessScope], error: str | None
    ) -> str:
        tok = runtime.settings.token
        realm = tok.realm
        if realm is None:
            headers = Headers(scope=scope)
            proto = headers.get("x-forwarded-proto") or scope.get("scheme", "http")
            host = headers.get("host") or "localhost"
            realm = f"{proto}://{host}/auth/token"
        parts = [f"realm={_quote(realm)}", f"service={_quote(tok.service)}"]
        if needed:
            parts.append(f"scope={_quote(format_scope_param(needed))}")
        if error:
            parts.append(f"error={_quote(error)}")
        return "Bearer " + ",".join(parts)

    def _bearer(self, runtime: AuthRuntime, scope: Scope) -> None:
        """Check the bearer token. A check that passed is remembered for its method, path and
        Authorization header until the token expires (the verifier's rule: same clock, same
        leeway), within one runtime (a new lifespan starts afresh).

        The answer depends on nothing else (the token's claims, the settings, the route), so
        reusing it changes no answer; a repeated request (a client polling one tag) then costs
        one dictionary lookup instead of the route regexes, the header parsing, the token cache
        and the grant checks, ~10 µs per request under load. Refusals are not remembered (each
        is logged and answered in full); POSTs are always checked in full (`_restrict_mount`
        may rewrite their query).
        """
        verifier = runtime.verifier
        assert verifier is not None
        if runtime is not self._allowed_runtime:  # a new lifespan: new keys, new settings
            self._allowed.clear()
            self._allowed_runtime = runtime
        method, path = scope["method"], scope["path"]
        key = (_raw_header(scope, b"authorization"), method, path)
        allowed = self._allowed.get(key)
        if allowed is not None and allowed.expires_at + verifier.leeway >= verifier.clock():
            return
        verified = self._check_bearer(runtime, scope)
        if method != "POST":
            if len(self._allowed) >= ALLOWED_CACHE_SIZE:
                self._allowed.clear()
            self._allowed[key] = verified

    def _check_bearer(self, runtime: AuthRuntime, scope: Scope) -> VerifiedToken:
        assert runtime.verifier is not None
        method, path = scope["method"], scope["path"]
        needed = required_access(method, path)
        header = self._authorization(runtime, scope)
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            message = "authentication required: get a token from the realm in WWW-Authenticate"
            if scheme.lower() == "basic":
                message = (
                    "this registry takes bearer tokens, not Basic credentials: log in "
                    "(docker/podman/skopeo login) so the client fetches a token from the realm"
                )
            raise RegistryError(
                ErrorCode.UNAUTHORIZED,
                message,
                detail=[_detail(s) for s in needed] or None,
                headers={"WWW-Authenticate": self._challenge(runtime, scope, needed, None)},
            )
        try:
            verified = runtime.verifier.verify(token)
        except TokenRejected as exc:
            log.warning("token_refused", reason=exc.reason, method=method, path=path[:300])
            raise RegistryError(
                ErrorCode.UNAUTHORIZED,
                f"token refused: {exc.reason}",
                headers={
                    "WWW-Authenticate": self._challenge(runtime, scope, needed, "invalid_token")
                },
            ) from None
        missing = [s for s in needed if not _grants(verified, s)]
        if missing:
            want = "; ".join(
                f"{','.join(s.actions)} on {s.type} {s.name} (token grants "
                f"{','.join(sorted(verified.actions(s.type, s.name))) or 'nothing'})"
                for s in missing
            )
            log.info(
                "insufficient_scope",
                sub=verified.subject,
                method=method,
                path=path[:300],
                needed=[str(s) for s in missing],
            )
            # 403 as RFC 6750 section 3.1 says for insufficient_scope (Distribution sends 401);
            # clients such as oras-py fetch a wider token only after a 403.
            raise RegistryError(
                ErrorCode.DENIED,
                f"access denied to {verified.subject or 'anonymous'}: needs {want}",
                detail=[_detail(s) for s in missing],
                headers={
                    "WWW-Authenticate": self._challenge(
                        runtime, scope, needed, "insufficient_scope"
                    )
                },
            )
        if method == "POST" and needed and needed[0].actions == _PUSH:
            _restrict_mount(scope, verified)
        return verified


def _grants(token: VerifiedToken, needed: AccessScope) -> bool:
    granted = token.actions(needed.type, needed.name)  # a frozenset: no copy needed
    return all(covers(granted, a) for a in needed.actions)


def _raw_header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header `name` (lowercase), the one `Headers(scope=scope)` returns,
    without building that mapping (nor copying the header list) on every request."""
    for key, value in scope["headers"]:
        if key == name:
            raw: bytes = value
            return raw
    return None


def _header(scope: Scope, name: bytes) -> str:
    """`Headers(scope=scope).get(name, "")`, the same answer."""
    raw = _raw_header(scope, name)
    return "" if raw is None else raw.decode("latin-1")


def _detail(scope: AccessScope) -> dict[str, str]:
    return {"Type": scope.type, "Name": scope.name, "Action": ",".join(scope.actions)}


def _restrict_mount(scope: Scope, token: VerifiedToken) -> None:
    """Drop `mount`/`from` unless the token may pull `from`: the registry then starts a plain
    upload (202), as the spec allows, instead of leaking a blob from a repository the caller
    cannot read."""
    query = scope.get("query_string", b"").decode("latin-1")
    params = parse_qsl(query, keep_blank_values=True)
    mount = [v for k, v in params if k == "mount"]
    if not mount:
        return
    source = next((v for k, v in params if k == "from"), None)
    if source is not None and covers(token.actions("repository", source), "pull"):
        return
    kept = [(k, v) for k, v in params if k not in ("mount", "from")]
    scope["query_string"] = urlencode(kept).encode("latin-1")
