"""The authority-statement store's port: records, the Protocol, and its error.

The registry keeps the namespace authority's statements so clients can fetch them (issue 20);
it judges none of them (clients choose their roots), so the store is a plain append-only list
ordered by issue time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredStatement:
    id: str
    type: str  # "grant" or "revoke"
    key_id: str | None  # the granted or revoked key
    issued: float  # Unix time the statement claims
    content: bytes  # the compact JWS, exactly as posted


class StatementConflict(ValueError):
    """Another statement with this id (different bytes) is already stored."""


class UnknownStatement(LookupError):
    """`last` of a page names no stored statement."""


class AuthorityStore(Protocol):
    async def add_statement(self, statement: StoredStatement) -> bool:
        """Store it; False when the same bytes are there already (idempotent).

        Raises StatementConflict when the id is taken by different bytes."""
        ...

    async def list_statements(self, n: int, last: str | None) -> list[StoredStatement]:
        """Up to `n` statements after the one with id `last`, by (issued, id).

        Raises UnknownStatement when `last` is not stored."""
        ...

    async def get_statement(self, statement_id: str) -> StoredStatement | None: ...

    async def count_statements(self) -> int: ...
