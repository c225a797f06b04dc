"""Settings -> everything one process serves or works on, opened once and closed once.

`open_services` is used alike by the ASGI app's lifespan (`http.app`) and the CLI (`gc`,
`migrate-storage`): one database (one engine pair, one schema check) shared by every store,
the blob storage, the cache, the registry with its policy, the trust service, the simple
signatures and the auth runtime.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import secrets
from dataclasses import dataclass, field
from types import TracebackType

from trustyard.cache.base import Cache
from trustyard.config import Settings, create_data_dir
from trustyard.metadata.copy_base import Tables
from trustyard.oci.platforms import IndexPlatforms
from trustyard.registry import Registry, RegistryOptions
from trustyard.registry.authority import AuthorityStatements
from trustyard.registry.lifecycle import ImmutableRule, TagLifecycle
from trustyard.registry.mirror import Mirrors
from trustyard.registry.mirror_notary import MirrorNotary
from trustyard.registry.policy import Policy, PolicyContext, build_policy
from trustyard.registry.policy_authority import AuthorityCheck  # noqa: F401 (registers it)
from trustyard.registry.policy_signatures import KINDS_REGISTERED  # noqa: F401 (registers them)
from trustyard.registry.policy_sources import RegistrySources
from trustyard.registry.quota import Quotas
from trustyard.registry.retention import RetentionRule
from trustyard.registry.signatures import SignatureLimits, SimpleSignatures
from trustyard.storage.base import Storage
from trustyard.trust.server.hsm_keys import TokenKeyStore
from trustyard.trust.server.policy_audit import PolicyAudit
from trustyard.trust.server.service import NotFound, TrustOptions, TrustService
from trustyard.wiring.audit import Auditor
from trustyard.wiring.auth import AuthRuntime, build_auth, gun_prefixes_of
from trustyard.wiring.backends import manifest_lookups, open_cache, open_storage
from trustyard.wiring.database import Database, open_database
from trustyard.wiring.events import event_recorder
from trustyard.wiring.mirror import open_mirrors
from trustyard.wiring.mirror_admission import (
    mirror_aliases,
    open_admission,
    open_mirror_notary,
    uses_notary,
)


@dataclass
class Services:
    """What `open_services` opened; `close` (or leaving `async with`) releases all of it."""

    settings: Settings
    database: Database
    storage: Storage | None = None
    cache: Cache | None = None
    registry: Registry | None = None
    trust: TrustService | None = None
    simple_signatures: SimpleSignatures | None = None
    authority: AuthorityStatements | None = None
    auth: AuthRuntime | None = None
    audit: Auditor | None = None
    mirrors: Mirrors | None = None  # pull-through mirrors (wiring/mirror.py)
    # mirrors' upstream Notary trust data, shared by the pull path and the admission
    mirror_notary: MirrorNotary | None = None
    _closing: contextlib.AsyncExitStack = field(
        default_factory=contextlib.AsyncExitStack, init=False, repr=False
    )

    @property
    def tables(self) -> Tables:
        """Whole-table access for `registry.migration` (`trustyard migrate-storage`)."""
        return self.database.tables

    async def close(self) -> None:
        """Close everything opened, last opened first (the database last)."""
        await self._closing.aclose()

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def open_services(
    settings: Settings, *, repositories: bool = True, server: bool = False, auth: bool = False
) -> Services:
    """Open what is asked for on one database.

    `repositories`: storage, cache and the registry (with its signature policy).
    `server`: also the trust service and the simple signatures the routes serve.
    `auth`: the auth runtime (accounts, access rules, tokens) of `settings.auth`.
    """
    if repositories:
        create_data_dir(settings.data_dir)
    database = await open_database(settings.metadata_target, create=True)
    services = Services(settings, database)
    services._closing.push_async_callback(database.close)
    try:
        if server and settings.audit.enabled:
            services.audit = Auditor(database.audit, settings.audit)
            services._closing.push_async_callback(services.audit.close)
        if repositories or (auth and settings.redis_url):
            services.cache = open_cache(settings.redis_url)
            services._closing.push_async_callback(services.cache.close)
        if repositories:
            _open_repositories(services, server)
        if auth:
            # Failed-login counters go to Redis when configured, so replicas share the limit.
            shared = services.cache if settings.redis_url else None
            services.auth = build_auth(
                settings.auth, settings.data_dir, database.auth, shared, gun_prefixes_of(settings)
            )
    except BaseException:
        await services.close()
        raise
    return services


def _open_repositories(services: Services, server: bool) -> None:
    settings, database, cache = services.settings, services.database, services.cache
    assert cache is not None
    storage = services.storage = open_storage(settings)
    services._closing.push_async_callback(storage.close)
    options = RegistryOptions(
        delete_enabled=settings.delete_enabled,
        max_manifest_bytes=settings.max_manifest_bytes,
        max_blob_bytes=settings.max_blob_bytes,
        index_platforms=IndexPlatforms.parse(settings.index_platforms),
        schema1=settings.schema1,
    )
    registry = Registry(
        storage, database.metadata, options, cache, manifest_lookups(settings, cache)
    )
    services.registry = registry
    registry.audit = services.audit
    if settings.events.endpoints:
        registry.record_events(event_recorder(settings, database.events))
    registry.lifecycle = open_lifecycle(settings, database)
    registry.uploads.quotas = open_quotas(settings, database)
    if server or (settings.policy.rules and settings.trust.enabled):
        services.trust = open_trust(settings, database)
    if settings.policy.rules:
        registry.policy = open_policy(settings, services)
    if server:
        services.simple_signatures = open_simple_signatures(settings, services)
        services.authority = AuthorityStatements(database.authority)
    services.mirrors = open_mirrors(settings, registry)
    if services.mirrors is not None and settings.policy.rules:  # verified admission
        # The CLI (`trustyard mirror prefetch`) opens no extension API, but admitted simple
        # signatures are stored all the same.
        signatures = services.simple_signatures or open_simple_signatures(settings, services)
        services.mirrors.admission = open_admission(
            settings,
            registry,
            signatures,
            policy_context(settings, services),
            services.mirror_notary,
        )
    if services.mirrors is not None:
        services._closing.push_async_callback(services.mirrors.aclose)


def open_lifecycle(settings: Settings, database: Database) -> TagLifecycle:
    rules = tuple(ImmutableRule(r.repository, r.tags) for r in settings.lifecycle.immutable)
    track_pulls = any(r.keep_pulled_days for r in settings.lifecycle.retention)
    return TagLifecycle(database.metadata, database.lifecycle, rules, track_pulls=track_pulls)


def open_quotas(settings: Settings, database: Database) -> Quotas | None:
    """Namespace quotas when any is configured (else the push path pays nothing)."""
    life = settings.lifecycle
    if not life.quotas and not life.default_quota_bytes:
        return None
    limits = {q.namespace: q.bytes for q in life.quotas}
    return Quotas(database.lifecycle, limits, life.default_quota_bytes, life.namespace_depth)


def quotas_for_show(settings: Settings, database: Database) -> Quotas:
    """`trustyard quota show` lists usage even when no limit is configured."""
    return open_quotas(settings, database) or Quotas(
        database.lifecycle, {}, 0, settings.lifecycle.namespace_depth
    )


def retention_rules(settings: Settings) -> tuple[RetentionRule, ...]:
    return tuple(
        RetentionRule(r.repository, r.tags, r.keep_last, r.keep_pulled_days)
        for r in settings.lifecycle.retention
    )


class _TrustFiles:
    """The policy's view of our own trust store (timestamps refreshed as the API serves them)."""

    def __init__(self, trust: TrustService) -> None:
        self.trust = trust

    async def get(self, gun: str, role: str) -> bytes | None:
        try:
            return (await self.trust.get_metadata(gun, role)).data
        except NotFound:
            return None


def open_policy(settings: Settings, services: Services) -> Policy:
    return build_policy(
        [r.model_dump() for r in settings.policy.rules], policy_context(settings, services)
    )


def policy_context(settings: Settings, services: Services) -> PolicyContext:
    """What the policy reads: the registry's stores, our trust store, the mirrors' names."""
    assert services.registry is not None
    sources = RegistrySources(
        services.registry, services.database.signatures, services.database.authority
    )
    trust = services.trust if settings.trust.enabled else None
    files = _TrustFiles(trust) if trust is not None else None
    ctx = sources.context(files, PolicyAudit(services.database.trust))
    ctx.identity_aliases = mirror_aliases(settings)  # signatures naming a mirror's upstream
    if settings.mirrors and uses_notary(settings) and services.mirror_notary is None:
        services.mirror_notary = open_mirror_notary(settings)
        services._closing.push_async_callback(services.mirror_notary.aclose)
    ctx.mirrored_trust = services.mirror_notary
    return ctx


def trust_passphrase(settings: Settings) -> bytes:
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


def open_trust(settings: Settings, database: Database) -> TrustService:
    options = TrustOptions(
        key_algorithm=settings.trust.key_algorithm,
        timestamp_expiry=datetime.timedelta(days=settings.trust.timestamp_expiry_days),
        snapshot_expiry=datetime.timedelta(days=settings.trust.snapshot_expiry_days),
        timestamp_refresh=datetime.timedelta(hours=settings.trust.timestamp_refresh_hours),
    )
    key_store = None
    if settings.trust.key_store:
        key_store = TokenKeyStore(settings.trust.key_store, settings.trust.key_store_pin)
    return TrustService(database.trust, trust_passphrase(settings), options, key_store=key_store)


def open_simple_signatures(settings: Settings, services: Services) -> SimpleSignatures:
    assert services.registry is not None
    limits = SignatureLimits(
        settings.max_signature_bytes,
        settings.max_signatures_per_manifest,
        settings.max_signatures_per_signer,
    )
    policy = services.registry.policy
    vetters = policy.upload_vetters if policy is not None else None
    return SimpleSignatures(
        services.database.metadata,
        services.database.signatures,
        limits,
        vetters,
        delete_enabled=settings.delete_enabled,
    )
