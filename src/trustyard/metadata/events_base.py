"""Event outbox port: rows written with the change they report, claimed by deliverers.

One row per (event, endpoint): each endpoint retries and dead-letters on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

OutboxState = Literal["pending", "delivered", "dead"]
STATES: tuple[OutboxState, ...] = ("pending", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event for one endpoint, to insert in the transaction of the change it reports."""

    event_id: str
    endpoint: str
    action: str
    repository: str
    payload: str  # one event of the envelope, as JSON


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: str
    endpoint: str
    action: str
    repository: str
    payload: str
    state: OutboxState
    attempts: int
    created_at: float
    next_attempt_at: float
    last_error: str | None


class OutboxStore(Protocol):
    async def enqueue(self, entries: Sequence[OutboxEntry]) -> None:
        """Insert rows on their own (events with no write of their own: pulls, denials)."""

    async def claim(
        self, owner: str, now: float, lease_seconds: float, limit: int
    ) -> list[OutboxRow]:
        """Lease up to `limit` due pending rows to `owner`: no other deliverer gets them until
        the lease ends (SKIP LOCKED on PostgreSQL, a conditional UPDATE on SQLite)."""

    async def release(self, owner: str) -> None:
        """End `owner`'s leases (a deliverer shutting down): its rows are due again at once."""

    async def delivered(self, ids: Sequence[int], owner: str, now: float) -> None:
        """Mark rows leased by `owner` delivered."""

    async def failed(
        self, ids: Sequence[int], owner: str, error: str, retry_at: float, dead: bool
    ) -> None:
        """Count an attempt on rows leased by `owner`: due again at `retry_at`, or dead."""

    async def list(self, state: OutboxState | None, limit: int) -> list[OutboxRow]:
        """Newest first."""

    async def retry(self, ids: Sequence[int] | None, now: float) -> int:
        """Put dead rows (`ids`, or all of them) back to pending, due now; how many."""

    async def purge(self, states: Sequence[OutboxState], before: float) -> int:
        """Delete rows in `states` created before `before`; how many."""

    async def counts(self) -> dict[str, int]:
        """Rows by state (the backlog is `pending`)."""
