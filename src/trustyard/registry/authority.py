"""The registry's copy of the namespace authority's statements (issue 20 part 2).

The registry stores and serves statements; it does not decide which authority to trust (clients
choose their roots and judge with `authority.statements.evaluate`). It still refuses what no
client could use: anything that is not a well-formed statement whose signature verifies with its
own x5c leaf, so garbage and tampered copies never reach the list clients fetch.
"""

from __future__ import annotations

from dataclasses import dataclass

from trustyard.authority import statements
from trustyard.metadata.authority_base import (
    AuthorityStore,
    StatementConflict,
    StoredStatement,
    UnknownStatement,
)
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.service import page_size

MAX_REQUEST_BYTES = statements.MAX_STATEMENT_BYTES + 1024  # a trailing newline or two
# Statements are up to 64 KiB each (a few KiB in practice): pages stay well under a few MiB.
MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class StatementPage:
    items: list[StoredStatement]
    next_last: str | None


class AuthorityStatements:
    """Submit, list and get statements over an `AuthorityStore`."""

    def __init__(self, store: AuthorityStore) -> None:
        self.store = store

    async def submit(self, body: bytes) -> tuple[StoredStatement, bool]:
        """Store a posted statement; (record, created). Idempotent for the same bytes."""
        try:
            parsed = statements.parse(body)
        except statements.StatementError as exc:
            raise RegistryError(ErrorCode.STATEMENT_INVALID, f"statement refused: {exc}") from None
        record = StoredStatement(
            parsed.id, parsed.type, parsed.subject_key, parsed.issued.timestamp(), parsed.raw
        )
        try:
            created = await self.store.add_statement(record)
        except StatementConflict:
            raise RegistryError(
                ErrorCode.STATEMENT_CONFLICT,
                f"a different statement with id {parsed.id} is already stored",
                detail={"id": parsed.id},
            ) from None
        return record, created

    async def page(self, n: str | None, last: str | None) -> StatementPage:
        size = min(page_size(n), MAX_PAGE)
        if size == 0:
            return StatementPage([], None)
        try:
            items = await self.store.list_statements(size + 1, last or None)
        except UnknownStatement:
            raise RegistryError(
                ErrorCode.PAGINATION_INVALID,
                f"last={last[:80] if last else ''!r} names no stored statement",
            ) from None
        if len(items) > size:
            return StatementPage(items[:size], items[size - 1].id)
        return StatementPage(items, None)

    async def get(self, statement_id: str) -> StoredStatement:
        found = await self.store.get_statement(statement_id)
        if found is None:
            raise RegistryError(
                ErrorCode.STATEMENT_UNKNOWN,
                f"no statement with id {statement_id[:80]!r} is stored",
                detail={"id": statement_id[:80]},
            )
        return found
