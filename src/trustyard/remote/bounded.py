"""Bounded reads of what a remote server answers: a size cap and a deadline on every body.

A registry, token server or trust server is not trusted to be small or quick. Every client read
is streamed (`send(..., stream=True)`) and goes through `read_body` (or `aread_body`), which stops
as soon as the body passes its cap or the deadline passes, instead of buffering whatever the
server sends and checking afterwards. Error bodies are read only up to `ERROR_BODY` bytes (the
rest is dropped: they are for a message). `loads_json` refuses JSON nested deeper than a caller
needs, with a message instead of a `RecursionError`.

(A shared bounded JSON parser is planned elsewhere; `loads_json` is the small local check the
clients need until then.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from trustyard.oci import jsonbounds
from trustyard.remote.errors import RemoteError

DEFAULT_DEADLINE = 120.0  # seconds for one whole body, however slowly it trickles in
ERROR_BODY = 64 * 1024
TOKEN_BODY = 1024 * 1024
MAX_JSON_DEPTH = 64


class BodyError(RemoteError):
    """A remote answer was too large, too slow, broken off or unparseable."""


def _declared_too_large(response: httpx.Response, limit: int) -> bool:
    declared = response.headers.get("content-length", "")
    return declared.isdigit() and int(declared) > limit


def _over(what: str, limit: int) -> BodyError:
    return BodyError(f"{what} is larger than the {limit} byte limit; stopped reading")


def _late(what: str, deadline: float) -> BodyError:
    return BodyError(f"{what} took longer than {deadline:g} s to arrive; stopped reading")


class _Body:
    """One body being gathered under its size bound and deadline: the sync and async readers
    below differ only in how they iterate."""

    def __init__(
        self, response: httpx.Response, limit: int, what: str, deadline: float, truncate: bool
    ) -> None:
        if not truncate and _declared_too_large(response, limit):
            raise _over(what, limit)
        self.limit, self.what, self.deadline, self.truncate = limit, what, deadline, truncate
        self.end = time.monotonic() + deadline
        self.buf = bytearray()

    def add(self, chunk: bytes) -> bool:
        """Take one chunk; True when the body is complete (truncated to the limit)."""
        self.buf += chunk
        if len(self.buf) > self.limit:
            if self.truncate:
                del self.buf[self.limit :]
                return True
            raise _over(self.what, self.limit)
        if time.monotonic() > self.end:
            raise _late(self.what, self.deadline)
        return False

    def broken(self, exc: httpx.HTTPError) -> BodyError:
        return BodyError(
            f"{self.what}: the connection failed while reading ({exc.__class__.__name__})"
        )


def read_body(
    response: httpx.Response,
    limit: int,
    what: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
    truncate: bool = False,
) -> bytes:
    """The body of a streamed response, at most `limit` bytes, within `deadline` seconds.

    Over the limit: `BodyError`, or with `truncate` the first `limit` bytes (for error bodies,
    which only feed a message). The response is left for the caller to close.
    """
    body = _Body(response, limit, what, deadline, truncate)
    try:
        for chunk in response.iter_bytes():
            if body.add(chunk):
                break
    except httpx.HTTPError as exc:
        raise body.broken(exc) from None
    return bytes(body.buf)


async def aread_body(
    response: httpx.Response,
    limit: int,
    what: str,
    *,
    deadline: float = DEFAULT_DEADLINE,
    truncate: bool = False,
) -> bytes:
    """`read_body` for an `httpx.AsyncClient` response."""
    body = _Body(response, limit, what, deadline, truncate)
    try:
        async for chunk in response.aiter_bytes():
            if body.add(chunk):
                break
    except httpx.HTTPError as exc:
        raise body.broken(exc) from None
    return bytes(body.buf)


def get_bounded(
    client: httpx.Client,
    url: str,
    limit: int,
    what: str,
    *,
    params: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """GET `url` and return a response whose body is already read under `limit` (a non-200
    body is cut at `ERROR_BODY`). Transport errors are `httpx.HTTPError`, as from `get`."""
    request = client.build_request("GET", url, params=params, headers=headers)
    response = client.send(request, stream=True)
    try:
        ok = response.status_code == 200
        body = read_body(response, limit if ok else ERROR_BODY, what, truncate=not ok)
    finally:
        response.close()
    return buffered(response, body)


def buffered(response: httpx.Response, body: bytes) -> httpx.Response:
    """A plain response holding `body` (already decoded) in place of the streamed one."""
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
    ]
    return httpx.Response(
        response.status_code, headers=headers, content=body, request=response.request
    )


def loads_json(data: bytes, what: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Decode JSON from a remote server: a clear `BodyError` for broken or too deeply nested
    input. The depth is checked on the bytes first (`jsonbounds`), so Python's decoder never
    recurses deeply (it would end in a `RecursionError`)."""
    try:
        jsonbounds.check(data, what=what, max_depth=max_depth)
        return json.loads(data)
    except jsonbounds.JSONTooDeep:
        raise BodyError(
            f"{what} is JSON nested too deeply (more than {max_depth} levels)"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BodyError(f"{what} is not valid JSON ({str(exc)[:120]})") from None
