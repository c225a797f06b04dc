"""The trust store port: TUF files (every version), server-held keys, changefeed, audit.

Implemented by `trustyard.metadata.trust_sql.SqlTrustStore` (SQLite/PostgreSQL) and by
`MemoryTrustStore` in tests; both keep every version and apply a publish atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from trustyard.metadata.events_base import OutboxEntry


class StaleVersion(Exception):
    """A file in the update does not have a higher version than the stored one (Notary's
    ErrOldVersion); nothing was written."""

    def __init__(self, role: str, version: int, current: int) -> None:
        super().__init__(f"{role} version {version} is not newer than the stored version {current}")
        self.role, self.version, self.current = role, version, current


@dataclass(frozen=True)
class TufFile:
    gun: str
    role: str
    version: int
    sha256: str  # hex of `data`
    data: bytes
    created_at: float = 0.0


@dataclass(frozen=True)
class ServerKey:
    gun: str
    role: str  # "timestamp" | "snapshot"
    key_id: str
    algorithm: str
    public: bytes  # Notary `keyval.public` (raw ed25519 or DER SPKI)
    private: bytes  # encrypted PKCS#8 PEM
    created_at: float = 0.0


@dataclass(frozen=True)
class Change:
    """A changefeed record: Notary's `Change` (timestamp version and sha256)."""

    id: int
    created_at: float
    gun: str
    version: int
    sha256: str
    category: str  # "update" | "deletion"


@dataclass(frozen=True)
class AuditEvent:
    action: str  # "publish" | "rotate_key" | "delete"
    gun: str
    actor: str
    detail: dict[str, Any] = field(default_factory=dict)


class TrustStore(Protocol):
    async def get_file(
        self, gun: str, role: str, *, version: int | None = None, sha256: str | None = None
    ) -> TufFile | None:
        """The current file of `role` (highest version), or the one with that version/hash."""

    async def publish(
        self,
        gun: str,
        files: list[TufFile],
        change: Change,
        audit: AuditEvent,
        events: Sequence[OutboxEntry] = (),
    ) -> None:
        """Store all `files`, one changefeed record, one audit event and the outbox rows
        `events` (webhooks) in one transaction.
        Raises StaleVersion (and writes nothing) when a file is not newer than the stored one."""

    async def delete_gun(self, gun: str, audit: AuditEvent) -> int:
        """Remove every file of `gun`, record a deletion change; returns files removed."""

    async def server_keys(self, gun: str, role: str) -> list[ServerKey]:
        """Server-held keys of `gun`'s `role`, newest first."""

    async def add_server_key(self, key: ServerKey, audit: AuditEvent | None) -> None:
        """Store a new key (and the rotation's audit event) in one transaction."""

    async def add_first_server_key(self, key: ServerKey) -> ServerKey:
        """Store `key` only if its GUN's role has no key yet, and return the role's newest key:
        concurrent first readers (other workers, other replicas) all get the same one."""

    async def changes(
        self, gun: str | None, change_id: int | None, records: int, reverse: bool
    ) -> list[Change]:
        """Changefeed page: after `change_id` ascending, or before it newest first."""

    async def audit_events(self, gun: str) -> list[tuple[float, AuditEvent]]:
        """Audit events for `gun`, oldest first."""


class AuditSink(Protocol):
    """Where audit events outside a trust write go (registry policy decisions,
    `trust.server.policy_audit`); implemented by the trust store backends."""

    async def record_audit(self, event: AuditEvent) -> None:
        """Store one audit event in its own transaction (over-long fields are cut)."""
