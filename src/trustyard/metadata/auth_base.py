"""Metadata ports for authentication: accounts (users and robots), groups and ACL rules.

Plain records and small Protocols; `metadata.auth_sql` implements them on SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

AccountKind = Literal["user", "robot"]


class AccountExists(ValueError):
    """An account with that name exists already."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    kind: AccountKind
    secret_hash: str  # bcrypt ($2b$…); never the secret itself
    admin: bool = False
    disabled: bool = False
    expires_at: float | None = None  # robots: unix time after which the secret stops working
    owner: str | None = None  # robots: the user who created it
    created_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AclRule:
    id: int
    account: str  # glob over account names, `anonymous`, or `group:<name>`
    repository: str  # glob over repository names; `${user}` is the requesting account
    actions: tuple[str, ...]


class AccountStore(Protocol):
    async def get_account(self, name: str) -> Account | None: ...

    async def create_account(self, account: Account) -> None:
        """Insert; raises AccountExists when the name is taken."""

    async def update_account(
        self,
        name: str,
        *,
        secret_hash: str | None = None,
        disabled: bool | None = None,
        replaces: str | None = None,
    ) -> bool:
        """Change the secret or the disabled flag; False when there is no such account.

        `replaces`: change only while the stored secret hash is this one (else False), so an
        automatic rehash never undoes a concurrent password change.
        """

    async def delete_account(self, name: str) -> bool: ...

    async def list_accounts(self) -> list[Account]: ...

    async def groups_of(self, name: str) -> list[str]: ...

    async def set_membership(self, group: str, name: str, member: bool) -> bool:
        """Add (`member`) or remove `name` from `group`; False when nothing changed."""


class AclStore(Protocol):
    async def add_rule(self, account: str, repository: str, actions: tuple[str, ...]) -> int: ...

    async def delete_rule(self, rule_id: int) -> bool: ...

    async def list_rules(self) -> list[AclRule]: ...


class AuthStore(AccountStore, AclStore, Protocol):
    async def close(self) -> None: ...
