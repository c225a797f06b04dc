"""Composition root of the server: settings → backends → use cases → Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware

from trustyard.config import Settings, settings_for_worker
from trustyard.http import v2
from trustyard.http.errors import EXCEPTION_HANDLERS
from trustyard.http.middleware import RegistryHeaders
from trustyard.metadata import open_metadata
from trustyard.registry import Registry, RegistryOptions
from trustyard.registry.gc import expire_uploads
from trustyard.storage import open_storage

log = structlog.get_logger("trustyard")


def configure_logging(level: str) -> None:
    """JSON lines on stderr: one event per line, machine-readable, no secrets."""
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


async def open_registry(settings: Settings) -> Registry:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(settings.storage_dir, fsync=settings.fsync)
    metadata = await open_metadata(settings.database_path, create=True)
    options = RegistryOptions(
        delete_enabled=settings.delete_enabled,
        max_manifest_bytes=settings.max_manifest_bytes,
        max_blob_bytes=settings.max_blob_bytes,
    )
    return Registry(storage, metadata, options)


async def _purge_uploads_forever(registry: Registry, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.upload_purge_interval_seconds)
        try:
            expired = await expire_uploads(
                registry.storage, registry.metadata, settings.upload_max_age_seconds
            )
            if expired:
                log.info("uploads_expired", count=len(expired))
        except Exception:
            log.exception("upload_purge_failed")


def create_app(settings: Settings) -> Starlette:
    configure_logging(settings.log_level)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        registry = await open_registry(settings)
        app.state.registry = registry
        purger = None
        if settings.upload_purge_interval_seconds > 0:
            purger = asyncio.create_task(_purge_uploads_forever(registry, settings))
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
            await registry.metadata.close()

    return Starlette(
        routes=v2.routes(),
        middleware=[Middleware(RegistryHeaders)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def worker_app() -> Starlette:
    """Factory for Granian worker processes (settings handed over by `trustyard serve`)."""
    return create_app(settings_for_worker())
