"""Composition root of the server: settings → backends → use cases → Starlette app."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator

import structlog
from starlette.applications import Starlette
from starlette.middleware import Middleware

from trustyard.auth.runtime import build_auth, gun_prefixes_of
from trustyard.cache import Cache, open_cache
from trustyard.cache.generations import CacheGenerations, FileGenerations
from trustyard.config import Settings, create_data_dir, settings_for_worker
from trustyard.http import extensions, v2
from trustyard.http import token_routes as auth_server
from trustyard.http import trust_routes as trust_server
from trustyard.http.access import AccessControl
from trustyard.http.errors import EXCEPTION_HANDLERS
from trustyard.http.middleware import RegistryHeaders
from trustyard.metadata import SqlMetadataStore, open_metadata
from trustyard.metadata.auth_sql import open_auth_store
from trustyard.metadata.base import ManifestRecord
from trustyard.metadata.signatures_sql import SqlSignatureStore
from trustyard.metadata.trust_sql import SqlTrustStore
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import Descriptor
from trustyard.oci.platforms import IndexPlatforms
from trustyard.registry import Registry, RegistryOptions
from trustyard.registry.gc import expire_uploads
from trustyard.registry.lookups import ManifestLookups
from trustyard.registry.policy import Policy, PolicyContext, build_policy
from trustyard.registry.policy_signatures import KINDS_REGISTERED  # noqa: F401 (registers them)
from trustyard.registry.signatures import SignatureLimits, SimpleSignatures
from trustyard.storage import S3Options, open_storage
from trustyard.trust.policy_audit import PolicyAudit
from trustyard.trust.server.hsm_keys import TokenKeyStore
from trustyard.trust.server.service import NotFound, TrustOptions, TrustService

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
    create_data_dir(settings.data_dir)
    s3 = None
    if settings.storage_backend == "s3" and settings.s3 is not None:
        s3 = S3Options(**settings.s3.model_dump())
    storage = open_storage(
        settings.storage_dir, fsync=settings.fsync, direct_io=settings.direct_io, s3=s3
    )
    metadata = await open_metadata(settings.metadata_target, create=True)
    options = RegistryOptions(
        delete_enabled=settings.delete_enabled,
        max_manifest_bytes=settings.max_manifest_bytes,
        max_blob_bytes=settings.max_blob_bytes,
        index_platforms=IndexPlatforms.parse(settings.index_platforms),
    )
    cache = open_cache(settings.redis_url)
    registry = Registry(storage, metadata, options, cache, manifest_lookups(settings, cache))
    if settings.policy.rules:
        registry.policy = open_policy(settings, registry)
    return registry


class _TrustFiles:
    """The policy's view of our own trust store (timestamps refreshed as the API serves them)."""

    def __init__(self, trust: TrustService) -> None:
        self.trust = trust

    async def get(self, gun: str, role: str) -> bytes | None:
        try:
            return (await self.trust.get_metadata(gun, role)).data
        except NotFound:
            return None


def open_policy(settings: Settings, registry: Registry) -> Policy:
    async def read_blob(digest: Digest, limit: int) -> bytes | None:
        stat = await registry.storage.stat(digest)
        if stat is None or stat.size > limit:
            return None
        data = b""
        async for chunk in registry.storage.read(digest):
            data += chunk
        return data

    async def get_manifest(repository: str, digest: Digest) -> ManifestRecord | None:
        return await registry.metadata.get_manifest(repository, digest)

    async def get_tagged(repository: str, tag: str) -> ManifestRecord | None:
        return await registry.metadata.get_manifest(repository, tag)

    async def referrers(repository: str, digest: Digest) -> list[Descriptor]:
        return (await registry.referrers(repository, digest, None)).descriptors

    simple = open_simple_signatures(settings, registry)

    async def simple_signatures(repository: str, digest: Digest) -> list[bytes]:
        return [s.content for s in await simple.store.list_signatures(repository, digest)]

    trust = _TrustFiles(open_trust(settings, registry)) if settings.trust.enabled else None
    ctx = PolicyContext(read_blob, get_manifest, trust, get_tagged, referrers, simple_signatures)
    if isinstance(registry.metadata, SqlMetadataStore):
        ctx.audit = PolicyAudit(registry.metadata.writer)
    return build_policy([r.model_dump() for r in settings.policy.rules], ctx)


def manifest_lookups(settings: Settings, cache: Cache) -> ManifestLookups | None:
    """A lookup cache only where it can be exact: Redis-shared stamps, or one machine's file."""
    if settings.redis_url:
        return ManifestLookups(cache, CacheGenerations(cache))
    if settings.database_url is None:
        return ManifestLookups(cache, FileGenerations(settings.data_dir / "cache-generations"))
    return None


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


def _trust_passphrase(settings: Settings) -> bytes:
    """The configured passphrase, else one generated once into data_dir/trust/passphrase."""
    if settings.trust.key_passphrase:
        return settings.trust.key_passphrase.encode()
    path = settings.data_dir / "trust" / "passphrase"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # Written aside, then linked into place: workers starting together agree on one.
        tmp = path.with_name(f".passphrase.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    return path.read_bytes().strip()


def open_trust(settings: Settings, registry: Registry) -> TrustService:
    metadata = registry.metadata
    if not isinstance(metadata, SqlMetadataStore):  # pragma: no cover - only SQL backends exist
        raise TypeError("the trust server needs a SQL metadata store")
    store = SqlTrustStore(metadata.reader, metadata.writer)
    options = TrustOptions(
        key_algorithm=settings.trust.key_algorithm,
        timestamp_expiry=datetime.timedelta(days=settings.trust.timestamp_expiry_days),
        snapshot_expiry=datetime.timedelta(days=settings.trust.snapshot_expiry_days),
        timestamp_refresh=datetime.timedelta(hours=settings.trust.timestamp_refresh_hours),
    )
    key_store = None
    if settings.trust.key_store:
        key_store = TokenKeyStore(settings.trust.key_store, settings.trust.key_store_pin)
    return TrustService(store, _trust_passphrase(settings), options, key_store=key_store)


def open_simple_signatures(settings: Settings, registry: Registry) -> SimpleSignatures:
    metadata = registry.metadata
    if not isinstance(metadata, SqlMetadataStore):  # pragma: no cover - only SQL backends exist
        raise TypeError("simple signatures need a SQL metadata store")
    limits = SignatureLimits(
        settings.max_signature_bytes,
        settings.max_signatures_per_manifest,
        settings.max_signatures_per_signer,
    )
    vetters = registry.policy.upload_vetters if registry.policy is not None else None
    store = SqlSignatureStore(metadata.reader, metadata.writer)
    return SimpleSignatures(
        metadata, store, limits, vetters, delete_enabled=settings.delete_enabled
    )


def open_signature_store(registry: Registry) -> SqlSignatureStore:
    """The simple-signature store beside the registry's metadata (GC prunes it)."""
    metadata = registry.metadata
    if not isinstance(metadata, SqlMetadataStore):  # pragma: no cover - only SQL backends exist
        raise TypeError("simple signatures need a SQL metadata store")
    return SqlSignatureStore(metadata.reader, metadata.writer)


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
        registry = None
        if serves_repositories:
            registry = await open_registry(settings)
            app.state.registry = registry
            app.state.trust = open_trust(settings, registry)
            app.state.simple_signatures = open_simple_signatures(settings, registry)
            app.state.trust_max_upload_bytes = settings.trust.max_upload_bytes
        app.state.auth = None
        if settings.auth.mode != "none":
            store = await open_auth_store(settings.metadata_target)
            # Failed-login counters go to Redis when configured, so replicas share the limit.
            cache = open_cache(settings.redis_url) if settings.redis_url else None
            app.state.auth = build_auth(
                settings.auth, settings.data_dir, store, cache, gun_prefixes_of(settings)
            )
        purger = None
        if registry is not None and settings.upload_purge_interval_seconds > 0:
            purger = asyncio.create_task(_purge_uploads_forever(registry, settings))
        try:
            yield
        finally:
            if purger is not None:
                purger.cancel()
            if registry is not None:
                await registry.metadata.close()
                await registry.storage.close()
                await registry.cache.close()
            if app.state.auth is not None:
                await app.state.auth.close()

    issuing = settings.auth.mode == "token" and settings.auth.token.issue
    token_routes = auth_server.routes() if issuing and "token" in groups else []
    trust_routes = trust_server.routes() if settings.trust.enabled and "trust" in groups else []
    registry_routes = [*v2.routes(), *extensions.routes()] if "registry" in groups else []
    # The issuer's few routes go last: /v2 requests (nearly all traffic) should not walk them,
    # and no /v2 or /extensions pattern can match /auth/..., so the order changes nothing else.
    routes = [*trust_routes, *registry_routes, *token_routes]
    middleware = [Middleware(RegistryHeaders)]
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
