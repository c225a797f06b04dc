"""The ASGI app: routes and middleware, with what `trustyard.wiring` opens in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware

from trustyard.cache.base import LockBusy
from trustyard.config import Settings, settings_for_worker
from trustyard.http import authority_routes, extensions, operations, ui, v2
from trustyard.http import token_routes as auth_server
from trustyard.http import trust_routes as trust_server
from trustyard.http.access import AccessControl
from trustyard.http.errors import EXCEPTION_HANDLERS
from trustyard.http.event_context import EventContext
from trustyard.http.event_metrics import count as count_events
from trustyard.http.metrics import RequestMetrics
from trustyard.http.middleware import RegistryHeaders
from trustyard.http.telemetry import PrometheusTelemetry, maintenance, pool_gauges
from trustyard.logs import configure_logging
from trustyard.oci.platforms import IndexPlatforms
from trustyard.registry import Registry
from trustyard.registry.events_delivery import EventDeliverer
from trustyard.registry.export import TrustFiles
from trustyard.registry.gc import GcReport, expire_uploads
from trustyard.registry.retention import RetentionReport, run_retention
from trustyard.registry.scrub import MB, ScrubOptions, ScrubReport, scrub
from trustyard.wiring import Database, open_services
from trustyard.wiring.audit import Auditor
from trustyard.wiring.database import pool_use
from trustyard.wiring.events import event_deliverer
from trustyard.wiring.export import retention_trust
from trustyard.wiring.gc import run_gc
from trustyard.wiring.health import probes
from trustyard.wiring.services import Services, retention_rules
from trustyard.wiring.ui import open_browse

log = structlog.get_logger("trustyard")
T = TypeVar("T")
POOL_GAUGE_SECONDS = 5.0  # how often each worker refreshes its database pool gauges


async def _every(seconds: float, job: Callable[[], Awaitable[None]], failed: str) -> None:
    """Run `job` every `seconds` until cancelled; a failure is logged and the loop goes on."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.exception(failed)


async def _counted(
    metrics: bool,
    task: str,
    attempt: Callable[[], Awaitable[T | None]],
    figures: Callable[[T], Mapping[str, int]],
) -> T | None:
    """One maintenance pass, counted in /metrics when metrics are on (http/telemetry.py)."""
    return await (maintenance(task, attempt, figures) if metrics else attempt())


def _upload_purge(registry: Registry, settings: Settings) -> Callable[[], Awaitable[None]]:
    async def attempt() -> list[str]:
        return list(
            await expire_uploads(
                registry.storage, registry.metadata, settings.upload_max_age_seconds
            )
        )

    async def purge() -> None:
        expired = await _counted(
            settings.metrics, "upload_purge", attempt, lambda e: {"uploads_expired": len(e)}
        )
        if expired:
            log.info("uploads_expired", count=len(expired))

    return purge


def _audit_purge(audit: Auditor) -> Callable[[], Awaitable[None]]:
    """Entries past `audit.retention_days` go (any worker may run it: a DELETE by age)."""

    async def purge() -> None:
        removed = await audit.purge()
        if removed:
            log.info("audit_purged", count=removed)

    return purge


def _scheduled_scrub(registry: Registry, settings: Settings) -> Callable[[], Awaitable[None]]:
    """`trustyard scrub` on a timer, under the cache's `scrub` lock: with Redis one replica
    scrubs at a time; a worker that finds the lock taken skips its turn."""
    options = ScrubOptions(
        rate=settings.scrub_rate_mbps * MB,
        index_platforms=IndexPlatforms.parse(settings.index_platforms),
        mirrored=tuple(m.prefix for m in settings.mirrors),
    )

    async def attempt() -> ScrubReport | None:
        try:
            async with registry.cache.lock("scrub", ttl_seconds=6 * 3600):
                return await scrub(registry.storage, registry.metadata, options)
        except LockBusy:
            return None

    async def run() -> None:
        report = await _counted(settings.metrics, "scrub", attempt, _scrub_figures)
        if report is None:
            return
        summary = report.to_json()
        if report.ok:
            log.info("scrub_finished", **{k: summary[k] for k in _SCRUB_COUNTS})
        else:
            log.warning("scrub_found_damage", **summary)

    return run


def _deliver_events(deliverer: EventDeliverer, metrics: bool) -> Callable[[], Awaitable[None]]:
    """One delivery pass of the outbox; every worker and replica runs one (rows are leased)."""

    counted_at = 0.0

    async def run() -> None:
        nonlocal counted_at
        report = await deliverer.run_once()
        if report.total("dead"):
            log.warning("events_dead_lettered", count=report.total("dead"))
        if metrics:
            # The outbox counts are a query: refreshed after a pass that sent something, else
            # every 15 s, not on every idle pass.
            now = time.monotonic()
            states = None
            if report.counts or now - counted_at >= 15:
                counted_at = now
                states = await deliverer.store.counts()
            count_events(report, states)

    return run


_SCRUB_COUNTS = ("repositories", "manifests_checked", "blobs_checked", "bytes_checked")


def _scrub_figures(report: ScrubReport) -> dict[str, int]:
    damaged = len(report.corrupt_blobs) + len(report.corrupt_manifests) + len(report.missing)
    return {
        "blobs_checked": report.blobs_checked,
        "manifests_checked": report.manifests_checked,
        "bytes": report.bytes_checked,
        "damaged": damaged,
    }


def _scheduled_retention(
    registry: Registry, settings: Settings, trust: TrustFiles | None = None
) -> Callable[[], Awaitable[None]]:
    """`trustyard retention run` on a timer, under the cache's `retention` lock (one replica at
    a time with Redis; a worker finding it taken skips its turn)."""
    rules = retention_rules(settings)
    lifecycle = registry.lifecycle
    assert lifecycle is not None

    async def attempt() -> RetentionReport | None:
        try:
            async with registry.cache.lock("retention", ttl_seconds=3600):
                return await run_retention(
                    lifecycle.history,
                    rules,
                    lifecycle.immutable,
                    dry_run=False,
                    changed=registry.changed,
                    trust=trust,
                )
        except LockBusy:
            return None

    async def run() -> None:
        report = await _counted(
            settings.metrics, "retention", attempt, lambda r: {"tags_deleted": r.deleted}
        )
        if report is None:
            return
        log.info(
            "retention_finished",
            deleted=report.deleted,
            kept=len(report.decisions) - len(report.to_delete),
        )

    return run


def _scheduled_gc(
    registry: Registry, services: Services, settings: Settings
) -> Callable[[], Awaitable[None]]:
    """`trustyard gc` on a timer, under the same cache `gc` lock as the CLI (with Redis one
    replica at a time; a worker finding it taken skips its turn). What tag deletion and retention
    leave behind goes here, and the figures reach /metrics (`task="gc"`)."""

    async def attempt() -> GcReport | None:
        try:
            async with registry.cache.lock("gc", ttl_seconds=6 * 3600):
                return await run_gc(settings, services, dry_run=False)
        except LockBusy:
            return None

    async def run() -> None:
        report = await _counted(settings.metrics, "gc", attempt, _gc_figures)
        if report is not None:
            log.info("gc_finished", **_gc_figures(report))

    return run


def _gc_figures(report: GcReport) -> dict[str, int]:
    return {
        "manifests_deleted": len(report.plan.manifests),
        "blobs_deleted": len(report.plan.blobs),
        "uploads_expired": len(report.expired_uploads),
        "bytes": report.freed_bytes,
    }


def _install_telemetry(registry: Registry | None) -> None:
    """Point the use cases' telemetry port at Prometheus (they default to recording nothing)."""
    if registry is None:
        return
    telemetry = PrometheusTelemetry()
    if registry.lookups is not None:
        registry.lookups.telemetry = telemetry
    if registry.policy is not None:
        registry.policy.telemetry = telemetry


def _pool_refresh(database: Database) -> Callable[[], Awaitable[None]]:
    async def refresh() -> None:
        pool_gauges(pool_use(database))

    return refresh


def create_app(settings: Settings) -> Starlette:
    """The ASGI app. Logging is the entry point's to configure (`worker_app`, `serve`): it is
    process-wide, and an app built inside another program (tests, an embedding) must not
    change that program's logging."""

    groups = settings.route_groups
    # The registry's backends serve the registry and trust routes; the token issuer alone
    # (`trustyard serve --only token`) needs only the account store.
    serves_repositories = bool(groups & {"registry", "trust"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = await open_services(
            settings,
            repositories=serves_repositories,
            server=True,
            auth=settings.auth.mode != "none",
        )
        registry = services.registry
        if registry is not None:
            app.state.registry = registry
            app.state.trust = services.trust
            app.state.simple_signatures = services.simple_signatures
            app.state.authority = services.authority
            app.state.trust_max_upload_bytes = settings.trust.max_upload_bytes
            if settings.ui:  # the web UI's read model (http/ui, docs/ui.md)
                app.state.browse = open_browse(settings, services)
        app.state.mirrors = services.mirrors
        app.state.auth = services.auth
        app.state.probes = probes(services)
        app.state.audit = services.audit
        app.state.metrics = settings.metrics
        tasks = []
        if settings.metrics:
            _install_telemetry(registry)
            refresh = _pool_refresh(services.database)
            app.state.refresh_pools = refresh
            await refresh()
            tasks.append(asyncio.create_task(_every(POOL_GAUGE_SECONDS, refresh, "pool_gauges")))
        if services.audit is not None:
            services.audit.start()
            purge_audit = _audit_purge(services.audit)
            every = settings.audit.purge_interval_seconds
            tasks.append(asyncio.create_task(_every(every, purge_audit, "audit_purge_failed")))
        if registry is not None and settings.upload_purge_interval_seconds > 0:
            purge = _upload_purge(registry, settings)
            every = settings.upload_purge_interval_seconds
            tasks.append(asyncio.create_task(_every(every, purge, "upload_purge_failed")))
        if registry is not None and settings.scrub_interval_seconds > 0:
            run = _scheduled_scrub(registry, settings)
            every = settings.scrub_interval_seconds
            tasks.append(asyncio.create_task(_every(every, run, "scheduled_scrub_failed")))
        if registry is not None and settings.events.endpoints:
            deliverer, poster = event_deliverer(settings, services.database.events)
            deliver = _deliver_events(deliverer, settings.metrics)
            every = settings.events.poll_interval_seconds
            tasks.append(asyncio.create_task(_every(every, deliver, "event_delivery_failed")))
        if registry is not None and settings.gc_interval_seconds > 0:
            run = _scheduled_gc(registry, services, settings)
            every = settings.gc_interval_seconds
            tasks.append(asyncio.create_task(_every(every, run, "scheduled_gc_failed")))
        if registry is not None and settings.lifecycle.retention_interval_seconds > 0:
            run = _scheduled_retention(registry, settings, retention_trust(services))
            every = settings.lifecycle.retention_interval_seconds
            tasks.append(asyncio.create_task(_every(every, run, "scheduled_retention_failed")))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if registry is not None and settings.events.endpoints:
                await asyncio.gather(*tasks, return_exceptions=True)
                with contextlib.suppress(Exception):  # the database may be what went away
                    await deliverer.close()
                await poster.close()
            await services.close()

    issuing = settings.auth.mode == "token" and settings.auth.token.issue
    token_routes = auth_server.routes() if issuing and "token" in groups else []
    trust_routes = trust_server.routes() if settings.trust.enabled and "trust" in groups else []
    registry_routes = (
        [*v2.routes(), *authority_routes.routes(), *extensions.routes()]
        if "registry" in groups
        else []
    )
    # The issuer's few routes go last: /v2 requests (nearly all traffic) should not walk them,
    # and no /v2 or /extensions pattern can match /auth/..., so the order changes nothing else.
    # The probes are three exact paths, matched after /v2 (which never matches them) and before
    # the issuer's routes, which stay last.
    ops_routes = operations.routes(settings.metrics)
    # The web UI (/ui/, docs/ui.md): its own session login, not the /v2 access check.
    ui_routes = ui.routes(settings) if settings.ui and "registry" in groups else []
    routes = [*trust_routes, *registry_routes, *ops_routes, *ui_routes, *token_routes]
    middleware = [Middleware(RegistryHeaders)]
    if settings.metrics:
        middleware.append(Middleware(RequestMetrics))
    if settings.events.endpoints:
        middleware.append(Middleware(EventContext))
    if serves_repositories:
        # The access check reads each route's declared rights from this very list.
        middleware.append(Middleware(AccessControl, routes=routes))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )


def worker_app() -> Starlette:
    """Factory for Granian worker processes (settings handed over by `trustyard serve`)."""
    settings = settings_for_worker()
    configure_logging(settings.log_level)
    return create_app(settings)
