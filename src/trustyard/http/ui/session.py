"""UI sessions: one signed cookie (itsdangerous) holding the account name, a binding to the
account's current secret (a new password ends its sessions) and the CSRF token of every form.

Visitors get a session before logging in, so the login form carries a CSRF token too; logging
in and out issue a fresh token. The cookie is HttpOnly, SameSite=Strict, Secure over TLS,
scoped to /ui, and expires server-side after `ui_session_seconds` (the signature's timestamp),
whatever the browser keeps.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "trustyard_ui"
_SALT = "trustyard-ui-session"


@dataclass(frozen=True)
class Session:
    user: str  # "" before login
    binding: str
    csrf: str
    fresh: bool = False  # not from the request's cookie: must be set on the response

    @staticmethod
    def new(user: str = "", binding: str = "") -> Session:
        return Session(user, binding, secrets.token_urlsafe(24), fresh=True)

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


def binding(secret_hash: str) -> str:
    return hashlib.sha256(secret_hash.encode()).hexdigest()[:24]


class Sessions:
    def __init__(self, key: bytes, max_age: int, secure: bool) -> None:
        self._signer = URLSafeTimedSerializer(key, salt=_SALT)
        self.max_age = max_age
        self.secure = secure

    def load(self, request: Request) -> Session:
        """The request's session; a new anonymous one when the cookie is missing, tampered
        with, malformed or expired."""
        raw = request.cookies.get(COOKIE)
        if raw and len(raw) < 4096:
            try:
                data = self._signer.loads(raw, max_age=self.max_age)
            except BadSignature:  # SignatureExpired is one
                data = None
            if (
                isinstance(data, list)
                and len(data) == 3
                and all(isinstance(x, str) for x in data)
                and data[2]
            ):
                return Session(data[0], data[1], data[2])
        return Session.new()

    def save(self, response: Response, session: Session, request: Request) -> None:
        response.set_cookie(
            COOKIE,
            self._signer.dumps([session.user, session.binding, session.csrf]),
            max_age=self.max_age,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=self.secure or request.url.scheme == "https",
        )
