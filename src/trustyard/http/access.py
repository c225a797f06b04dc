"""ASGI access control for `/v2/…` and `/extensions/v2/…`: Basic (htpasswd mode) or Bearer
tokens (token mode).

The rights a request needs come from the route it reaches: each route declares them
(`auth.scopes.GuardedRoute`, gathered in `RouteTable`) and this check matches the request
against the same route objects, in the same order, as the router that then runs the handler, so
no second copy of the route table exists to drift from the first. A path that reaches no route
needs any valid identity (the router answers 404/405).

Parameters that name another resource are approved here too: an upload start's `mount`/`from`
is parsed once (repeats refused with 400) and what was approved is left in the ASGI scope
(`http.params.APPROVED_UPLOAD`) for the handler, which acts on nothing else. A mount with
`from` needs pull on `from`; without `from` (automatic cross-mount) it may link the blob only
from a repository the token grants pull on; otherwise a plain upload starts (202), telling
nothing about blobs the caller cannot read. Refusals render through `http.errors` with a
`WWW-Authenticate` challenge; the log line says why, never the credential.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence

import structlog
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from trustyard.auth.keyring import TokenRejected
from trustyard.auth.scopes import (
    CATALOG,
    IDENTITY,
    GuardedRoute,
    Rights,
    covers,
    format_scope_param,
)
from trustyard.auth.scopes import Scope as AccessScope
from trustyard.auth.token_verifier import VerifiedToken
from trustyard.auth.users import AuthFailed, RateLimited
from trustyard.http.errors import error_response
from trustyard.http.params import (
    APPROVED_UPLOAD,
    MAX_MOUNT_SOURCES,
    UploadStart,
    parse_upload_start,
)
from trustyard.http.token_routes import (
    audit_context,
    audit_log,
    login_failed,
    parse_basic,
    rate_limited,
)
from trustyard.metadata.audit_base import ANONYMOUS, RequestContext, current_request
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.wiring.auth import AuthRuntime

log = structlog.get_logger("trustyard.auth")

__all__ = ["CATALOG", "AccessControl", "RouteTable", "guarded_prefix"]

# Bearer checks that passed, by (Authorization header, method, path): see AccessControl._bearer.
ALLOWED_CACHE_SIZE = 1024
_PREFIXES = ("/v2", "/extensions/v2/")


def guarded_prefix(path: str) -> bool:
    """Paths whose routes must all declare their rights (everything else is not checked here)."""
    return path.startswith(_PREFIXES)


class RouteTable:
    """The guarded routes, in the router's order, with cheap necessary conditions in front of
    Starlette's own `Route.matches`: a route is tried only when it takes the method and the
    path contains the route's longest literal piece (any match contains it); then the route's
    own compiled pattern and converters decide, as `Route.matches` does. So a manifest HEAD
    runs one regex, not one per route, and the answer is the router's (a test compares them).

    Refuses (at startup) a `/v2` or `/extensions/v2` route without declared rights, which this
    check could not protect.
    """

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes: list[GuardedRoute] = []
        self._entries: list[tuple[GuardedRoute, frozenset[str], str]] = []
        for route in routes:
            path = getattr(route, "path", "")
            if not isinstance(route, GuardedRoute):
                if guarded_prefix(path):
                    raise TypeError(f"route {path} declares no rights: make it a GuardedRoute")
                continue
            literals = re.split(r"\{[^}]*\}", route.path)
            self.routes.append(route)
            self._entries.append((route, frozenset(route.methods or ()), max(literals, key=len)))

    def match(self, scope: Scope) -> tuple[GuardedRoute | None, dict[str, object]]:
        """The route the router runs for `scope` (its first full match; a method mismatch or
        no match: None) and the path parameters the handler will see."""
        method, path = scope["method"], scope["path"]
        mounted = bool(scope.get("root_path"))
        for route, methods, literal in self._entries:
            if method not in methods or literal not in path:
                continue
            if mounted:  # under a root path: let Starlette strip it
                match, child = route.matches(scope)
                if match is Match.FULL:
                    found: dict[str, object] = child["path_params"]
                    return route, found
                continue
            # What `Route.matches` does for a full match, without its scope copies.
            m = route.path_regex.match(path)
            if m is not None:
                convert = route.param_convertors
                return route, {k: convert[k].convert(v) for k, v in m.groupdict().items()}
        return None, {}


def required_access(
    routes: RouteTable, scope: Scope
) -> tuple[Rights, list[AccessScope], dict[str, object]]:
    """The rights of the route `scope` reaches, the scopes they need, and its path parameters."""
    route, params = routes.match(scope)
    rights = IDENTITY if route is None else route.rights
    return rights, rights.scopes(params), params


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AccessControl:
    """Plain ASGI middleware (no body buffering); a no-op unless auth mode is htpasswd/token."""

    def __init__(
        self,
        app: ASGIApp,
        runtime: AuthRuntime | None = None,
        routes: Sequence[BaseRoute] | None = None,
    ) -> None:
        self.app = app
        self.runtime = runtime
        # The router's own route objects (None: read from the app on first use).
        self._routes = None if routes is None else RouteTable(routes)
        self._basic_ok: dict[bytes, float] = {}
        self._allowed: dict[tuple[bytes | None, str, str], VerifiedToken] = {}
        self._allowed_runtime: AuthRuntime | None = None

    def _runtime(self, scope: Scope) -> AuthRuntime | None:
        if self.runtime is not None:
            return self.runtime
        app = scope.get("app")
        runtime: AuthRuntime | None = getattr(getattr(app, "state", None), "auth", None)
        return runtime

    def routes(self, scope: Scope) -> RouteTable:
        if self._routes is None:
            self._routes = RouteTable(scope["app"].routes)
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not guarded_prefix(scope["path"]):
            await self.app(scope, receive, send)
            return
        runtime = self._runtime(scope)
        mode = "none" if runtime is None else runtime.settings.mode
        context = audit_context(scope)  # the audit log's actor and client for this request
        try:
            if runtime is not None and mode not in ("none", "htpasswd"):
                verified = self._bearer(runtime, scope)
                current_request.set(RequestContext(verified.subject or ANONYMOUS, context.client))
            else:
                if runtime is not None and mode == "htpasswd":
                    user = await self._basic(runtime, scope)
                    current_request.set(RequestContext(user, context.client))
                # No per-repository rights here: whoever got this far may read everything.
                if scope["method"] == "POST":
                    rights, _, params = required_access(self.routes(scope), scope)
                    if rights.mounts:
                        approve_upload(scope, str(params[rights.param or "name"]), None)
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
    async def _basic(self, runtime: AuthRuntime, scope: Scope) -> str:
        """The Basic user, authenticated (a login: audited when checked, not when remembered)."""
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
            return creds[0]
        client = scope["client"][0] if scope.get("client") else "unknown"
        audit = audit_log(scope)
        try:
            await runtime.accounts.authenticate(creds[0], creds[1], client)
        except RateLimited as exc:
            log.warning("login_rate_limited", account=creds[0][:64], client=client)
            if audit is not None:
                audit.record("login", actor=creds[0][:64], outcome="rate_limited", detail=_BASIC)
            raise rate_limited(exc) from None
        except AuthFailed as exc:
            log.warning("login_failed", reason=exc.reason, client=client)
            if audit is not None:
                detail = {**_BASIC, "reason": exc.reason}
                audit.record("login", actor=creds[0][:64], outcome="failure", detail=detail)
            raise login_failed(settings.basic_realm) from None
        if audit is not None:
            audit.record("login", actor=creds[0], detail=_BASIC)
        if len(self._basic_ok) > 10_000:
            self._basic_ok.clear()
        self._basic_ok[key] = now + 60
        return creds[0]

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

    def _bearer(self, runtime: AuthRuntime, scope: Scope) -> VerifiedToken:
        """Check the bearer token. A check that passed is remembered for its method, path and
        Authorization header until the token expires (the verifier's rule: same clock, same
        leeway), within one runtime (a new lifespan starts afresh).

        The answer depends on nothing else (the token's claims, the settings, the route), so
        reusing it changes no answer; a repeated request (a client polling one tag) then costs
        one dictionary lookup instead of the route matching, the header parsing, the token cache
        and the grant checks, ~10 µs per request under load. Refusals are not remembered (each
        is logged and answered in full); POSTs are always checked in full (an upload start's
        `mount`/`from` are approved anew each time).
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
            return allowed
        verified = self._check_bearer(runtime, scope)
        if method != "POST":
            if len(self._allowed) >= ALLOWED_CACHE_SIZE:
                self._allowed.clear()
            self._allowed[key] = verified
        return verified

    def _check_bearer(self, runtime: AuthRuntime, scope: Scope) -> VerifiedToken:
        assert runtime.verifier is not None
        method, path = scope["method"], scope["path"]
        rights, needed, params = required_access(self.routes(scope), scope)
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
        if rights.mounts:
            approve_upload(scope, str(params[rights.param or "name"]), verified)
        return verified


_BASIC = {"via": "basic"}


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


def approve_upload(scope: Scope, name: str, token: VerifiedToken | None) -> None:
    """Parse an upload start's parameters once and leave what may be done in the scope.

    `token` None: no per-repository rights apply (auth mode none or htpasswd), so a mount may
    link the blob from `from`, or from any repository when `from` is absent. With a token: from
    `from` only when the token grants pull on it; without `from`, only from the repositories the
    token grants pull on. Refused sources are dropped, never reported: the handler then starts a
    plain upload (202), as the spec allows.
    """
    asked = parse_upload_start(scope)  # a repeated mount/from/digest is refused here (400)
    sources: tuple[str, ...] | None
    if asked.mount is None:
        sources = ()
    elif token is None:
        sources = None
    elif asked.source is not None:
        readable = covers(token.actions("repository", asked.source), "pull")
        sources = (asked.source,) if readable else ()
    else:
        sources = tuple(
            repo
            for (rtype, repo), actions in token.access.items()
            if rtype == "repository" and covers(actions, "pull")
        )[:MAX_MOUNT_SOURCES]
    mount, source = asked.mount, asked.source
    if sources == () and mount is not None:
        log.info("mount_not_approved", name=name[:300], source=(source or "")[:300])
        mount = source = None
    scope[APPROVED_UPLOAD] = UploadStart(mount, source, asked.digest, sources)
