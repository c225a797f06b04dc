"""Operator endpoints, outside `/v2` and unauthenticated: `/healthz`, `/readyz`, `/metrics`.

`/healthz` says only that the process answers (a liveness probe must not fail because the
database is down: restarting the process would not help). `/readyz` answers 503 naming what is
down, so haproxy, nginx or Kubernetes take the replica out of rotation until it can serve.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from trustyard.http.metrics import metrics
from trustyard.wiring.health import readiness


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    probes = getattr(request.app.state, "probes", None)
    if probes is None:  # the lifespan has not opened the services (yet)
        return JSONResponse({"status": "starting", "checks": {}}, status_code=503)
    answer = await readiness(probes)
    return JSONResponse(
        {"status": "ready" if answer.ready else "unavailable", "checks": answer.checks},
        status_code=200 if answer.ready else 503,
        headers={"Cache-Control": "no-store"},
    )


def routes(with_metrics: bool) -> list[BaseRoute]:
    found: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
    if with_metrics:
        found.append(Route("/metrics", metrics, methods=["GET", "HEAD"]))
    return found
