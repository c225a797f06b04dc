"""`/auth/token` (Docker token spec GET, OAuth2 POST) and `/auth/jwks.json`: thin routes.

Errors are `RegistryError`s, rendered by the app's one error handler. Credentials, tokens and
refresh tokens are never logged; the log says who, what was granted, and why a login failed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from trustyard.auth.scopes import parse_scopes
from trustyard.auth.service import TokenService, UnknownService
from trustyard.auth.users import ANONYMOUS, AuthFailed, Principal, RateLimited
from trustyard.metadata.audit_base import RequestContext, current_request
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.wiring.audit import Auditor

log = structlog.get_logger("trustyard.auth")

MAX_FORM_BYTES = 64 * 1024


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) from `Basic base64(user:password)`, or None when not Basic or garbled."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def audit_log(scope: Scope) -> Auditor | None:
    """The server's audit recorder (None: auditing is off, or an app without a lifespan)."""
    audit: Auditor | None = getattr(getattr(scope.get("app"), "state", None), "audit", None)
    return audit


def audit_context(scope: Scope) -> RequestContext:
    """Start this request's audit context: anonymous so far, from the client address (the
    TCP peer, or X-Forwarded-For behind a proxy `audit.trusted_proxies` names)."""
    peer = scope["client"][0] if scope.get("client") else ""
    audit = audit_log(scope)
    client = peer
    if audit is not None:
        forwarded = None
        for key, value in scope["headers"]:
            if key == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
                break
        client = audit.client_address(peer, forwarded)
    context = RequestContext(client=client)
    current_request.set(context)
    return context


def rate_limited(exc: RateLimited) -> RegistryError:
    return RegistryError(
        ErrorCode.TOOMANYREQUESTS,
        f"too many failed logins for this {exc.what}; try again in {exc.retry_after} s",
        headers={"Retry-After": str(exc.retry_after)},
    )


def login_failed(realm: str) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAUTHORIZED,
        "invalid username or password",
        headers={"WWW-Authenticate": f'Basic realm="{realm}"'},
    )


def _tokens(request: Request) -> TokenService:
    service: TokenService | None = request.app.state.auth.tokens
    if service is None:
        raise RegistryError(ErrorCode.UNSUPPORTED, "this server does not issue tokens")
    return service


def _check_header_size(request: Request) -> None:
    limit = request.app.state.auth.settings.max_authorization_bytes
    header = request.headers.get("authorization", "")
    if len(header) > limit:
        raise RegistryError(
            ErrorCode.UNAUTHORIZED,
            f"Authorization header of {len(header)} bytes is larger than the limit of {limit}",
        )


async def _login(request: Request, tokens: TokenService, user: str, password: str) -> Principal:
    audit = audit_log(request.scope)
    try:
        principal = await tokens.login(user, password, client_address(request))
    except RateLimited as exc:
        log.warning("login_rate_limited", account=user[:64], client=client_address(request))
        if audit is not None:
            audit.record("login", actor=user[:64], outcome="rate_limited", detail=_TOKEN)
        raise rate_limited(exc) from None
    except AuthFailed as exc:
        log.warning("login_failed", reason=exc.reason, client=client_address(request))
        if audit is not None:
            detail = {**_TOKEN, "reason": exc.reason}
            audit.record("login", actor=user[:64], outcome="failure", detail=detail)
        raise login_failed(tokens.issuer.issuer) from None
    if audit is not None:
        audit.record("login", actor=principal.name, detail=_TOKEN)
    return principal


_TOKEN = {"via": "token"}


def _audit_grant(request: Request, principal: Principal, granted: list[Any], grant: str) -> None:
    audit = audit_log(request.scope)
    if audit is not None:
        scopes = [str(s) for s in granted]
        audit.record(
            "token",
            actor=principal.name or "anonymous",
            detail={"grant": grant, "scopes": scopes},
        )


def _service(tokens: TokenService, value: str | None) -> None:
    try:
        tokens.check_service(value)
    except UnknownService as exc:
        raise RegistryError(ErrorCode.DENIED, str(exc)) from None


async def token_get(request: Request) -> Response:
    tokens = _tokens(request)
    audit_context(request.scope)
    _check_header_size(request)
    params = request.query_params
    _service(tokens, params.get("service"))
    principal = ANONYMOUS
    header = request.headers.get("authorization")
    if header:
        creds = parse_basic(header)
        if creds is None:
            raise RegistryError(
                ErrorCode.UNAUTHORIZED,
                "the token endpoint takes Basic credentials (or none, for anonymous access)",
            )
        principal = await _login(request, tokens, *creds)
    offline = params.get("offline_token", "").lower() == "true"
    body, granted = await tokens.grant(
        principal, parse_scopes(params.getlist("scope")), offline=offline, oauth=False
    )
    log.info("token_issued", sub=principal.name, granted=[str(s) for s in granted], grant="get")
    _audit_grant(request, principal, granted, "get")
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def token_post(request: Request) -> Response:
    tokens = _tokens(request)
    audit_context(request.scope)
    _check_header_size(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise RegistryError(ErrorCode.TOO_LARGE, "token request form is too large")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise RegistryError(ErrorCode.TOO_LARGE, "token request form is too large")
    # application/x-www-form-urlencoded (OAuth2); the first value of each field counts. Nothing
    # else is parsed (a JSON body, however deep, is refused unread).
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype and ctype != "application/x-www-form-urlencoded":
        raise RegistryError(
            ErrorCode.TOKEN_REQUEST_INVALID,
            f"the token endpoint takes an application/x-www-form-urlencoded form, not {ctype[:60]!r}",
        )
    values: dict[str, str] = {}
    try:
        fields = parse_qsl(raw.decode("utf-8", "replace"), max_num_fields=100)
    except ValueError:  # more than 100 fields
        raise RegistryError(
            ErrorCode.TOKEN_REQUEST_INVALID, "token request form has more than 100 fields"
        ) from None
    for key, value in fields:
        values.setdefault(key, value)
    _service(tokens, values.get("service"))
    grant_type = values.get("grant_type", "")
    if grant_type == "password":
        principal = await _login(
            request, tokens, values.get("username", ""), values.get("password", "")
        )
        offline = values.get("access_type") == "offline"
    elif grant_type == "refresh_token":
        try:
            principal = await tokens.from_refresh_token(values.get("refresh_token", ""))
        except AuthFailed as exc:
            log.warning("refresh_refused", reason=exc.reason, client=client_address(request))
            audit = audit_log(request.scope)
            if audit is not None:
                detail = {"via": "refresh_token", "reason": exc.reason}
                audit.record("login", outcome="failure", detail=detail)
            raise RegistryError(
                ErrorCode.UNAUTHORIZED, f"refresh token refused: {exc.reason}"
            ) from None
        offline = False
    else:
        raise RegistryError(
            ErrorCode.UNSUPPORTED,
            f"grant_type {grant_type[:40]!r} is not supported; use password or refresh_token",
        )
    body, granted = await tokens.grant(
        principal, parse_scopes([values.get("scope", "")]), offline=offline, oauth=True
    )
    log.info(
        "token_issued", sub=principal.name, granted=[str(s) for s in granted], grant=grant_type
    )
    _audit_grant(request, principal, granted, grant_type)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def jwks(request: Request) -> Response:
    return JSONResponse(_tokens(request).jwks())


def routes() -> list[Route]:
    return [
        Route("/auth/token", token_get, methods=["GET"]),
        Route("/auth/token", token_post, methods=["POST"]),
        Route("/auth/jwks.json", jwks, methods=["GET"]),
    ]
