"""A real metadata outage, in-process: the SQLite file cannot be opened (moved away, a directory
in its place) once the pools hold no connection. Registry, trust and token routes all answer
the registry's 503 with Retry-After, and everything answers again once the file is back."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings
from trustyard.config import AuthSettings, Settings
from trustyard.http.app import create_app
from trustyard.metadata.errors import MetadataUnavailable

GUN = "registry.test/team/app"
UNAVAILABLE = {
    "errors": [
        {
            "code": "UNAVAILABLE",
            "message": "the metadata database is unavailable; nothing was changed, retry shortly",
        }
    ]
}


def _engines(app: Starlette) -> list[AsyncEngine]:
    found: list[AsyncEngine] = []
    registry = getattr(app.state, "registry", None)
    if registry is not None:
        found += [registry.metadata.reader, registry.metadata.writer]
    auth = getattr(app.state, "auth", None)
    if auth is not None:
        found += [auth.store.reader, auth.store.writer]
    return found


@contextlib.contextmanager
def _database_gone(path: Path) -> Iterator[None]:
    """The database file (and its WAL) moved aside, a directory where it was."""
    parts = [p for p in path.parent.glob(path.name + "*") if not p.name.endswith("writer-lock")]
    for part in parts:
        os.rename(part, part.with_name(part.name + ".away"))
    path.mkdir()
    try:
        yield
    finally:
        path.rmdir()
        for part in parts:
            os.rename(part.with_name(part.name + ".away"), part)


async def _outage(app: Starlette, settings: Settings) -> contextlib.AbstractContextManager[None]:
    for engine in _engines(app):
        await engine.dispose()  # no pooled connection survives: every request must reconnect
    return _database_gone(settings.data_dir / "metadata.db")


def _assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, resp.text
    assert resp.headers["Retry-After"] == "5"
    assert resp.json() == UNAVAILABLE


@contextlib.asynccontextmanager
async def _client(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
            yield app, c


async def test_registry_and_trust_routes_answer_503_while_the_database_is_gone(
    settings: Settings,
) -> None:
    async with _client(settings) as (app, c):
        assert (await c.get(f"/v2/{GUN}/_trust/tuf/root.json")).status_code == 404
        with await _outage(app, settings):
            _assert_unavailable(await c.get("/v2/team/app/tags/list"))
            _assert_unavailable(await c.post("/v2/team/app/blobs/uploads/"))
            _assert_unavailable(await c.get(f"/v2/{GUN}/_trust/tuf/root.json"))
            _assert_unavailable(await c.get(f"/v2/{GUN}/_trust/tuf/timestamp.key"))
            _assert_unavailable(await c.get("/v2/_trust/changefeed"))
            head = await c.head("/v2/team/app/manifests/v1")
            assert (head.status_code, head.headers["Retry-After"]) == (503, "5")
        # Back: the same app answers from the database again.
        assert (await c.get(f"/v2/{GUN}/_trust/tuf/root.json")).status_code == 404
        assert (await c.get("/v2/team/app/tags/list")).status_code == 404
        assert (await c.get(f"/v2/{GUN}/_trust/tuf/timestamp.key")).status_code == 200


async def test_the_token_route_answers_503_while_the_database_is_gone(
    tmp_path: Path, migrated_database: Path
) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", migrated_database)
    settings = make_settings(data_dir, auth=AuthSettings(mode="token"))
    form = {"grant_type": "password", "username": "alice", "password": "pw", "service": "trustyard"}
    async with _client(settings) as (app, c):
        refused = await c.post("/auth/token", data=form)
        assert refused.status_code == 401  # the database answers: no such account
        with await _outage(app, settings):
            _assert_unavailable(await c.post("/auth/token", data=form))
            _assert_unavailable(
                await c.get("/auth/token", auth=("alice", "pw"), params={"service": "trustyard"})
            )
        assert (await c.post("/auth/token", data=form)).status_code == 401


@pytest.mark.parametrize("path", ["/v2/_trust/changefeed", f"/v2/{GUN}/_trust/tuf/timestamp.key"])
async def test_a_store_raising_unavailable_is_503_on_trust_routes(
    settings: Settings, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trust routes have no catch-all of their own any more: the app's table answers."""

    async def down(*args: object, **kwargs: object) -> None:
        raise MetadataUnavailable("test: the database is down")

    async with _client(settings) as (app, c):
        for method in ("changes", "server_keys"):
            monkeypatch.setattr(app.state.trust.store, method, down)
        _assert_unavailable(await c.get(path))
