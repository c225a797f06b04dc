"""The real app, built by `create_app` on SQLite + files in a temp dir, driven in-process.

No server process and no socket: httpx's ASGI transport calls the Starlette app inside its
lifespan, so a test of `/v2` behaviour costs milliseconds, not a `trustyard serve` start.
The real-server suites (tests/integration) stay as the proof that real clients work.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from trustyard.config import Settings
from trustyard.http.app import create_app
from trustyard.wiring import upgrade_database

BASE_URL = "http://registry.test"


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    """Embedded defaults, minus what only slows tests down: no fsync, no purger task.

    The log level stays the default: `create_app` configures structlog for the whole process,
    and a stricter level would hide the info events later tests capture (tests/trust_client).
    """
    values: dict[str, object] = {
        "data_dir": data_dir,
        "fsync": False,
        "upload_purge_interval_seconds": 0,
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head for the session (`trustyard db upgrade`'s own code).

    Each test starts from a copy: the app then finds the schema current and migrates nothing
    (~15 ms instead of ~120 ms per test). `test_registry.py` opens a fresh data dir, so the
    create-and-migrate path runs too.
    """
    path = tmp_path_factory.mktemp("template") / "metadata.db"
    asyncio.run(upgrade_database(path))
    return path


def fresh_data_dir(path: Path, template: Path) -> Path:
    """`path` as a data dir holding a copy of the migrated database `template`."""
    path.mkdir(mode=0o700)
    for part in template.parent.glob(template.name + "*"):
        if not part.name.endswith(".writer-lock"):
            shutil.copy2(part, path / part.name)
    return path


@contextlib.asynccontextmanager
async def serve(
    settings: Settings, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `create_app(settings)`, inside the app's lifespan.

    `raise_app_exceptions=False` answers as a real server would (the app's own 500 response)
    instead of raising the handler's exception into the test.
    """
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
            yield c


@pytest.fixture
def settings(tmp_path: Path, migrated_database: Path) -> Settings:
    return make_settings(fresh_data_dir(tmp_path / "data", migrated_database))


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    """The app inside its lifespan: backends open, closed again after the test."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as c:
        yield c
