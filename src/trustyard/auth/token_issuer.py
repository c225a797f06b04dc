"""Issuing Docker registry tokens (JWT) and reading back the refresh tokens we issued.

Access tokens carry the granted scopes for one audience (the registry's service); refresh tokens
go to a separate audience (`<service>#refresh`) so a verifier never takes one as an access token.
Headers: `kid` in the configured form, plus the `x5c` chain (leaf first) unless disabled.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from trustyard.auth.keyring import TokenRejected
from trustyard.auth.scopes import Scope
from trustyard.auth.token_keys import KidFormat, SigningKey
from trustyard.auth.token_verifier import MAX_TOKEN_BYTES, rfc3339
from trustyard.crypto.keyid import public_jwk


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


class TokenIssuer:
    """Signs access and refresh tokens with one key."""

    def __init__(
        self,
        key: SigningKey,
        issuer: str,
        *,
        ttl_seconds: int = 300,
        refresh_ttl_seconds: int = 30 * 86400,
        kid_format: KidFormat = "libtrust",
        x5c: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.ttl = ttl_seconds
        self.refresh_ttl = refresh_ttl_seconds
        self.kid_format = kid_format
        self.clock = clock
        self._headers: dict[str, Any] = {"typ": "JWT", "kid": key.kid(kid_format)}
        if x5c:
            self._headers["x5c"] = key.x5c()

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self.key.private_key, algorithm=self.key.algorithm, headers=self._headers
        )

    def issue(self, subject: str, audience: str, access: Iterable[Scope]) -> IssuedToken:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + self.ttl,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [s.access() for s in access],
        }
        return IssuedToken(self._sign(claims), self.ttl, rfc3339(now))

    def issue_refresh(self, subject: str, audience: str, binding: str) -> str:
        """A long-lived token that only the refresh grant accepts (`binding` ties it to the
        account's current secret, so a password change revokes it)."""
        now = int(self.clock())
        return self._sign(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": _refresh_audience(audience),
                "exp": now + self.refresh_ttl,
                "iat": now,
                "jti": secrets.token_urlsafe(16),
                "bnd": binding,
            }
        )

    def jwks(self, keys: Iterable[SigningKey] = ()) -> dict[str, Any]:
        """A JWKS document listing each key under every kid form (libtrust and RFC 7638)."""
        out: list[dict[str, Any]] = []
        for key in (self.key, *keys):
            base = public_jwk(key.public_key)
            for kid in dict.fromkeys((key.kid("libtrust"), key.kid("rfc7638"))):
                out.append({**base, "kid": kid, "alg": key.algorithm, "use": "sig"})
        return {"keys": out}


def _refresh_audience(service: str) -> str:
    return f"{service}#refresh"


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    subject: str
    binding: str


def read_refresh_token(
    token: str,
    key: SigningKey,
    *,
    issuer: str,
    service: str,
    clock: Callable[[], float] = time.time,
) -> RefreshClaims:
    """Check a refresh token we issued (our own key only)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("refresh token is too long")
    try:
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=[key.algorithm],
            audience=_refresh_audience(service),
            issuer=issuer,
            options={"require": ["exp", "sub", "bnd"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("refresh token expired; log in again") from None
    except jwt.PyJWTError:
        raise TokenRejected(
            "refresh token is invalid (not issued by this server for this service)"
        ) from None
    return RefreshClaims(str(claims["sub"]), str(claims["bnd"]))
