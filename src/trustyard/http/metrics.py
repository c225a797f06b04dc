"""Prometheus metrics of the HTTP layer, and the `/metrics` exposition.

Granian runs several worker processes: `trustyard serve` points `PROMETHEUS_MULTIPROC_DIR` at a
fresh directory before any worker starts (prometheus-client's multiprocess mode), so each worker
writes its samples there and `/metrics`, answered by any one worker, adds them all up. Without
that variable (tests, an embedding) the process's own registry is served.

Label values are bounded: the route is its *template* (`/v2/{name:path}/manifests/{reference}`),
never the repository; methods outside the usual few are counted as `other`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


@dataclass(frozen=True)
class Instruments:
    requests: Counter
    latency: Histogram
    bytes: Counter
    in_flight: Gauge


@cache
def instruments() -> Instruments:
    """Made on first use, in the worker: prometheus-client picks single- or multiprocess mode
    when it is first imported, so nothing imports it before `trustyard serve` has set
    `PROMETHEUS_MULTIPROC_DIR` (the CLI imports this module long before that)."""
    from prometheus_client import Counter, Gauge, Histogram

    return Instruments(
        requests=Counter(
            "trustyard_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
        ),
        latency=Histogram(
            "trustyard_http_request_duration_seconds",
            "Time from request start to the last body byte sent, by route template and method.",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ),
        bytes=Counter(
            "trustyard_http_bytes_total",
            "Body bytes received (in) and sent (out), by route template.",
            ["route", "direction"],
        ),
        in_flight=Gauge(
            "trustyard_http_requests_in_flight",
            "Requests being answered now, by route template (upload PATCH/PUT: uploads in flight).",
            ["route"],
            multiprocess_mode="livesum",
        ),
    )


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestMetrics:
    """Counts requests, latency, body bytes and requests in flight.

    Plain ASGI (no body buffering). The route is known only once the router has matched it, so
    the in-flight gauge is raised when the response starts and lowered when it ends; a request
    still reading its body (a long upload PATCH) is counted from its first byte received.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/metrics":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        received = sent = 0
        counted: str | None = None  # the route whose in-flight gauge this request raised
        m = instruments()

        def track() -> None:
            nonlocal counted
            if counted is None:
                counted = _route_of(scope)
                m.in_flight.labels(counted).inc()

        async def receive_wrapper() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                track()
            return message

        async def send_wrapper(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                track()
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        finally:
            route = _route_of(scope)
            method = scope["method"] if scope["method"] in _METHODS else "other"
            m.requests.labels(route, method, str(status or 500)).inc()
            m.latency.labels(route, method).observe(time.perf_counter() - started)
            if received:
                m.bytes.labels(route, "in").inc(received)
            if sent:
                m.bytes.labels(route, "out").inc(sent)
            if counted is not None:
                m.in_flight.labels(counted).dec()


def exposition() -> bytes:
    """Every worker's samples (multiprocess mode), else this process's."""
    from prometheus_client import CollectorRegistry, generate_latest, multiprocess

    instruments()  # the families exist (at zero) before the first request is counted
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()


async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    refresh_pools = getattr(request.app.state, "refresh_pools", None)
    if refresh_pools is not None:  # this worker's pool gauges as of now (others: within 5 s)
        await refresh_pools()
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)
