"""ASGI middleware: the API-version header on every response, and a structured access log."""

from __future__ import annotations

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("trustyard.access")

_API_VERSION = (b"docker-distribution-api-version", b"registry/2.0")


class RegistryHeaders:
    """Adds `Docker-Distribution-API-Version` and logs method, path, status and duration.

    Plain ASGI rather than BaseHTTPMiddleware, which would buffer and slow streamed bodies.
    Query strings and credentials are never logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), _API_VERSION]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"][:300],
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
