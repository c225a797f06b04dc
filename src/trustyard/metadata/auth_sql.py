"""Accounts, groups and ACL rules on SQL, in the same database (and MetaData) as the registry."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from trustyard.metadata import schema
from trustyard.metadata.auth_base import Account, AccountExists, AclRule

accounts = Table(
    "auth_accounts",
    schema.metadata,
    Column("name", String(128), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("secret_hash", String(128), nullable=False),
    Column("admin", Boolean, nullable=False, default=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("expires_at", Float, nullable=True),
    Column("owner", String(128), nullable=True),
    Column("created_at", Float, nullable=False),
)

group_members = Table(
    "auth_group_members",
    schema.metadata,
    Column("group_name", String(128), primary_key=True),
    Column("account", String(128), primary_key=True),
    Index("ix_auth_group_members_account", "account"),
)

acl_rules = Table(
    "auth_acl_rules",
    schema.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account", String(255), nullable=False),
    Column("repository", String(512), nullable=False),
    Column("actions", String(64), nullable=False),
)


def _account(row: Any) -> Account:
    return Account(
        name=row.name,
        kind=row.kind,
        secret_hash=row.secret_hash,
        admin=bool(row.admin),
        disabled=bool(row.disabled),
        expires_at=row.expires_at,
        owner=row.owner,
        created_at=row.created_at,
    )


class SqlAuthStore:
    """Implements `AuthStore` on a (reader, writer) SQLAlchemy async engine pair."""

    def __init__(self, reader: AsyncEngine, writer: AsyncEngine) -> None:
        self.reader = reader
        self.writer = writer

    async def close(self) -> None:
        await self.reader.dispose()
        await self.writer.dispose()

    async def get_account(self, name: str) -> Account | None:
        async with self.reader.connect() as conn:
            row = (await conn.execute(select(accounts).where(accounts.c.name == name))).first()
        return _account(row) if row is not None else None

    async def create_account(self, account: Account) -> None:
        try:
            async with self.writer.begin() as conn:
                await conn.execute(
                    insert(accounts).values(
                        name=account.name,
                        kind=account.kind,
                        secret_hash=account.secret_hash,
                        admin=account.admin,
                        disabled=account.disabled,
                        expires_at=account.expires_at,
                        owner=account.owner,
                        created_at=account.created_at or time.time(),
                    )
                )
        except IntegrityError:
            raise AccountExists(f"account {account.name} exists already") from None

    async def update_account(
        self,
        name: str,
        *,
        secret_hash: str | None = None,
        disabled: bool | None = None,
        replaces: str | None = None,
    ) -> bool:
        values: dict[str, Any] = {}
        if secret_hash is not None:
            values["secret_hash"] = secret_hash
        if disabled is not None:
            values["disabled"] = disabled
        if not values:
            return await self.get_account(name) is not None
        where = accounts.c.name == name
        if replaces is not None:
            where = where & (accounts.c.secret_hash == replaces)
        async with self.writer.begin() as conn:
            result = await conn.execute(update(accounts).where(where).values(**values))
        return bool(result.rowcount)

    async def delete_account(self, name: str) -> bool:
        async with self.writer.begin() as conn:
            result = await conn.execute(delete(accounts).where(accounts.c.name == name))
            await conn.execute(delete(group_members).where(group_members.c.account == name))
            # A user's robots go with it.
            await conn.execute(delete(accounts).where(accounts.c.owner == name))
        return bool(result.rowcount)

    async def list_accounts(self) -> list[Account]:
        async with self.reader.connect() as conn:
            rows = (await conn.execute(select(accounts).order_by(accounts.c.name))).all()
        return [_account(r) for r in rows]

    async def groups_of(self, name: str) -> list[str]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(
                select(group_members.c.group_name)
                .where(group_members.c.account == name)
                .order_by(group_members.c.group_name)
            )
            return [r[0] for r in rows]

    async def set_membership(self, group: str, name: str, member: bool) -> bool:
        async with self.writer.begin() as conn:
            if member:
                try:
                    async with conn.begin_nested():
                        await conn.execute(
                            insert(group_members).values(group_name=group, account=name)
                        )
                except IntegrityError:
                    return False
                return True
            result = await conn.execute(
                delete(group_members).where(
                    (group_members.c.group_name == group) & (group_members.c.account == name)
                )
            )
            return bool(result.rowcount)

    async def add_rule(self, account: str, repository: str, actions: tuple[str, ...]) -> int:
        async with self.writer.begin() as conn:
            result = await conn.execute(
                insert(acl_rules).values(
                    account=account, repository=repository, actions=",".join(actions)
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    async def delete_rule(self, rule_id: int) -> bool:
        async with self.writer.begin() as conn:
            result = await conn.execute(delete(acl_rules).where(acl_rules.c.id == rule_id))
        return bool(result.rowcount)

    async def list_rules(self) -> list[AclRule]:
        async with self.reader.connect() as conn:
            rows = (await conn.execute(select(acl_rules).order_by(acl_rules.c.id))).all()
        return [
            AclRule(r.id, r.account, r.repository, tuple(a for a in r.actions.split(",") if a))
            for r in rows
        ]
