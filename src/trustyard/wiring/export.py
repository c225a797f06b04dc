"""What `trustyard export static` reads, from the services `open_services` opened."""

from __future__ import annotations

from trustyard.registry.export import ExportSources, Statements
from trustyard.trust.server.service import NotFound, TrustService
from trustyard.wiring.services import Services

_FEED_PAGE = 1000


class ServiceTrustFiles:
    """The trust service as the export sees it: GUNs from the changefeed, files as served
    (so an exported timestamp is the freshly re-signed one the API would answer)."""

    def __init__(self, trust: TrustService) -> None:
        self.trust = trust

    async def guns(self) -> list[str]:
        latest: dict[str, str] = {}
        after: int | None = None
        while True:
            page = await self.trust.changes(None, after, _FEED_PAGE, False)
            for change in page:
                latest[change.gun] = change.category
            if len(page) < _FEED_PAGE:
                return sorted(gun for gun, category in latest.items() if category != "deletion")
            after = page[-1].id

    async def file(self, gun: str, role: str, version: int | None = None) -> bytes | None:
        try:
            return (await self.trust.get_metadata(gun, role, version=version)).data
        except NotFound:
            return None


def authority_statements(services: Services) -> Statements | None:
    """The authority statements to export (`v2/_authority/statements`), as the API serves them.

    Hook for the statement store of issue 20 part 2: return a callable giving that JSON once the
    store is wired into `Services`; None exports no statements.
    """
    return None


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
