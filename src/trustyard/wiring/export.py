"""What `trustyard export static` reads, from the services `open_services` opened."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from trustyard.registry.export import ExportSources, Statements, TrustFiles
from trustyard.trust.server.service import NotFound, TrustService
from trustyard.trust.store import Change, TrustStore
from trustyard.wiring.services import Services

_FEED_PAGE = 1000


class ServiceTrustFiles:
    """The trust service as the export sees it: GUNs from the changefeed, files as served
    (so an exported timestamp is the freshly re-signed one the API would answer)."""

    def __init__(self, trust: TrustService) -> None:
        self.trust = trust

    async def guns(self) -> list[str]:
        return await _live_guns(self.trust.changes)

    async def file(self, gun: str, role: str, version: int | None = None) -> bytes | None:
        try:
            return (await self.trust.get_metadata(gun, role, version=version)).data
        except NotFound:
            return None


def authority_statements(services: Services) -> Statements:
    """The authority statements to export (`extensions/v2/_authority/statements`): every stored
    statement in issue order, in the JSON the API serves (one page: a static host has no `n`)."""
    store = services.database.authority

    async def everything() -> bytes:
        found: list[str] = []
        last: str | None = None
        while True:
            page = await store.list_statements(_FEED_PAGE, last)
            found += [item.content.decode() for item in page]
            if len(page) < _FEED_PAGE:
                return json.dumps({"statements": found}, separators=(",", ":")).encode()
            last = page[-1].id

    return everything


def export_sources(services: Services, *, signatures: bool) -> ExportSources:
    assert services.registry is not None
    if not signatures:
        return ExportSources(services.registry.metadata, services.registry.storage)
    enabled = services.trust is not None and services.settings.trust.enabled
    trust = ServiceTrustFiles(services.trust) if enabled and services.trust else None
    return ExportSources(
        services.registry.metadata,
        services.registry.storage,
        signatures=services.database.signatures,
        trust=trust,
        statements=authority_statements(services),
    )


async def _live_guns(changes: Callable[..., Awaitable[list[Change]]]) -> list[str]:
    """Every GUN whose last change in the changefeed is not a deletion."""
    latest: dict[str, str] = {}
    after: int | None = None
    while True:
        page = await changes(None, after, _FEED_PAGE, False)
        for change in page:
            latest[change.gun] = change.category
        if len(page) < _FEED_PAGE:
            return sorted(gun for gun, category in latest.items() if category != "deletion")
        after = page[-1].id


class StoredTrustFiles:
    """The trust store as retention reads it: targets roles as stored (no trust service, so no
    key passphrase, is needed by `trustyard retention run`)."""

    def __init__(self, store: TrustStore) -> None:
        self.store = store

    async def guns(self) -> list[str]:
        return await _live_guns(self.store.changes)

    async def file(self, gun: str, role: str, version: int | None = None) -> bytes | None:
        found = await self.store.get_file(gun, role, version=version)
        return found.data if found is not None else None


def retention_trust(services: Services) -> TrustFiles:
    """The Notary collections retention reads (their targets count as signed content)."""
    return StoredTrustFiles(services.database.trust)
