"""In-process mirror tests: the mirror app's upstream client pointed at another ASGI app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.types import ASGIApp

from tests.inprocess.conftest import BASE_URL
from trustyard.registry.mirror import Mirrors
from trustyard.remote.credentials import Credentials
from trustyard.remote.upstream import UpstreamRegistry


async def point_upstream(
    mirror_app: Starlette, upstream: ASGIApp, url: str, credentials: Credentials | None = None
) -> None:
    """Replace the first mirror's configured upstream client by one that talks to `upstream`
    in-process (no socket), under the configured base URL `url`."""
    state: Mirrors = mirror_app.state.mirrors
    await state.mirrors[0].upstreams[0].aclose()
    state.mirrors[0].upstreams[0] = UpstreamRegistry(
        url, credentials=credentials, transport=httpx.ASGITransport(app=upstream)
    )


@contextlib.asynccontextmanager
async def mirror_pair(
    upstream_app: Starlette, mirror_app: Starlette, url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Both apps inside their lifespans, the mirror reading from the upstream app; yields a
    client of the upstream and one of the mirror."""
    async with (
        upstream_app.router.lifespan_context(upstream_app),
        mirror_app.router.lifespan_context(mirror_app),
    ):
        await point_upstream(mirror_app, upstream_app, url)
        up = httpx.AsyncClient(transport=httpx.ASGITransport(app=upstream_app), base_url=BASE_URL)
        down = httpx.AsyncClient(transport=httpx.ASGITransport(app=mirror_app), base_url=BASE_URL)
        async with up, down:
            yield up, down
