"""Small request bodies read whole (manifests, signatures, TUF uploads), with a hard limit.

A refused body is read and thrown away up to a bound before the answer goes out: an HTTP/1.1
client cannot read an answer before it has written its request, so closing on it mid-send turns
our 413 into a broken pipe on its side. Past the bound (or the deadline) the connection closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect, Request

DRAIN_BYTES = 256 * 1024 * 1024
DRAIN_SECONDS = 30.0


class BodyTooLarge(Exception):
    """The body is over its limit; `close` when the rest could not be drained."""

    def __init__(self, message: str, *, close: bool) -> None:
        super().__init__(message)
        self.message, self.close = message, close


class TrackedBody:
    """`request.stream()` that remembers whether the client's body was read to its end, so a
    handler refused halfway through a blob can drain the rest (`drain`) before answering."""

    def __init__(self, request: Request) -> None:
        self._chunks = request.stream().__aiter__()
        self.done = False
        self.started = False
        # A client that sent `Expect: 100-continue` sends nothing until we read: if we refuse
        # before reading, it must not be invited to send a body only to have it dropped.
        self.waits_for_continue = request.headers.get("expect", "").lower() == "100-continue"

    def __aiter__(self) -> TrackedBody:
        return self

    async def __anext__(self) -> bytes:
        self.started = True
        try:
            return await self._chunks.__anext__()
        except StopAsyncIteration:
            self.done = True
            raise


async def drain(body: TrackedBody) -> bool:
    """Read and drop what is left of `body` (up to the bound); False: close the connection."""
    if body.done:
        return True
    if body.waits_for_continue and not body.started:
        return False  # answer at once; the client sends nothing after a final status
    return await _discard(body, 0)


async def _discard(stream: AsyncIterator[bytes], seen: int) -> bool:
    """Read the rest of a refused body up to the bound; False when the connection must close."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for chunk in stream:
                seen += len(chunk)
                if seen > DRAIN_BYTES:
                    return False
    except (TimeoutError, ClientDisconnect):
        return False
    return True


async def read_bounded(request: Request, limit: int, what: str) -> bytes:
    """The whole body, or `BodyTooLarge` without buffering more than `limit` bytes."""
    declared = request.headers.get("content-length")
    stream = request.stream()
    message = f"{what} is larger than the limit of {limit} bytes"
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        message = f"{what} of {declared} bytes is larger than the limit of {limit} bytes"
        if request.headers.get("expect", "").lower() == "100-continue":
            # The client waits for our go-ahead before sending: answer now, it sends nothing.
            raise BodyTooLarge(message, close=True)
        total = 0
    else:
        parts: list[bytes] = []
        total = 0
        async for chunk in stream:
            total += len(chunk)
            if total > limit:
                break
            parts.append(chunk)
        else:
            return b"".join(parts)
    raise BodyTooLarge(message, close=not await _discard(stream, total))
