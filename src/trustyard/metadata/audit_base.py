"""The audit log port: who did what, from where, to which repository, with what outcome.

Use cases (registry, auth routes, policy) report through `AuditLog.record`, which never waits on
the database (the wiring's recorder batches); the actor and client address of the request being
served come from `current_request`, which the HTTP access check sets, so no use case sees an HTTP
type. `AuditStore` is what the SQL backend implements.
"""

from __future__ import annotations

import contextvars
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

# The closed list of actions (`trustyard audit --action`); trust rows come from the trust store.
ACTIONS = (
    "push",
    "pull",
    "delete",
    "tag_move",
    "login",
    "token",
    "policy",
    "trust",
    "admin",
)
ANONYMOUS = "anonymous"


class RequestContext(NamedTuple):
    """Who is asking and from where (the verified subject / Basic user, the client address).
    A tuple: made on every guarded request, it should cost next to nothing."""

    actor: str = ANONYMOUS
    client: str = ""


current_request: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "trustyard_audit_request", default=None
)


@dataclass(slots=True)
class AuditEntry:
    action: str
    at: float
    actor: str = ANONYMOUS
    client: str = ""
    repository: str = ""
    digest: str = ""
    tag: str = ""
    outcome: str = "success"
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "time": dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(timespec="milliseconds"),
            "action": self.action,
            "actor": self.actor,
            "client": self.client,
            "repository": self.repository,
            "digest": self.digest,
            "tag": self.tag,
            "outcome": self.outcome,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class AuditQuery:
    since: float | None = None
    actor: str | None = None
    repository: str | None = None
    action: str | None = None
    limit: int = 100


class AuditStore(Protocol):
    async def append(self, entries: Sequence[AuditEntry]) -> None:
        """Store `entries` in one transaction (over-long fields are cut)."""

    async def query(self, query: AuditQuery) -> list[AuditEntry]:
        """Matching entries, newest first, at most `query.limit`; trust-store rows included."""

    async def purge(self, before: float) -> int:
        """Delete entries older than `before` (epoch seconds); returns how many."""


class AuditLog(Protocol):
    def record(
        self,
        action: str,
        *,
        repository: str = "",
        digest: str = "",
        tag: str = "",
        outcome: str = "success",
        detail: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        """Queue one entry; actor and client default to `current_request`'s."""

    def pulled(self, repository: str, digest: str, tag: str) -> None:
        """A manifest GET: recorded according to the pull setting (off, sampled, all)."""
