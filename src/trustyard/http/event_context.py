"""Per-request facts for Distribution's event `request` and `actor` records (registry/events.py).

Installed only when webhooks are configured. Plain ASGI; the actor is worked out only when an
event is actually recorded (most requests record none).
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

# The trust routes' actor rule (the subject the access middleware verified), reused as is.
from trustyard.http.trust_routes import _actor as request_actor
from trustyard.registry.events import CURRENT_REQUEST, RequestInfo


class EventContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client = scope.get("client")
        info = RequestInfo(
            id=str(uuid.uuid4()),
            addr=f"{client[0]}:{client[1]}" if client else "",
            host=request.headers.get("host", ""),
            method=scope["method"],
            useragent=request.headers.get("user-agent", ""),
            scheme=scope.get("scheme", "http"),
            actor=lambda: _actor(request),
        )
        token = CURRENT_REQUEST.set(info)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_REQUEST.reset(token)


def _actor(request: Request) -> str:
    """Distribution leaves `actor` empty for anonymous requests."""
    actor = request_actor(request)
    return "" if actor == "anonymous" else actor
