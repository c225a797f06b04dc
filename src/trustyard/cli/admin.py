"""`trustyard admin`: users, robots, groups and ACL rules in the metadata store."""

from __future__ import annotations

import asyncio
import datetime as dt
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from trustyard.auth.access import validate_rule
from trustyard.auth.users import AccountError, Accounts, validate_account_name
from trustyard.cli.common import (
    ConfigOption,
    DataDirOption,
    open_store_or_exit,
    settings_or_exit,
)
from trustyard.metadata.audit_base import AuditEntry, AuditStore
from trustyard.metadata.auth_base import AccountExists, AuthStore
from trustyard.wiring import open_database
from trustyard.wiring.auth import login_limiter

T = TypeVar("T")

app = typer.Typer(help="Manage users, robots, groups and ACL rules.", no_args_is_help=True)
user_app = typer.Typer(
    help="User accounts (each user owns the namespace <name>/*).", no_args_is_help=True
)
robot_app = typer.Typer(help="Robot accounts with generated secrets.", no_args_is_help=True)
acl_app = typer.Typer(
    help="ACL rules (allow-only; the union of matching rules).", no_args_is_help=True
)
group_app = typer.Typer(
    help="Group membership (ACL accounts `group:<name>`).", no_args_is_help=True
)
app.add_typer(user_app, name="user")
app.add_typer(robot_app, name="robot")
app.add_typer(acl_app, name="acl")
app.add_typer(group_app, name="group")


@app.callback()
def admin(ctx: typer.Context, data_dir: DataDirOption = None, config: ConfigOption = None) -> None:
    """Manage users, robots, groups and ACL rules (same database as `trustyard serve`)."""
    ctx.obj = (data_dir, config)


def _run(
    ctx: typer.Context,
    action: Callable[[Accounts, AuthStore], Awaitable[T]],
    *,
    create: bool = False,
    audited: Mapping[str, Any] | None = None,
) -> T:
    """Run `action` on the server's store; only commands that add something may create one.

    A change (`audited`: what it is about) is written to the audit log as an `admin` entry,
    its outcome too, with the operating-system user as the actor."""
    data_dir, config = ctx.obj if ctx.obj else (None, None)
    settings = settings_or_exit(config, data_dir=data_dir)
    words = ctx.command_path.split()
    command = " ".join(words[words.index("admin") :] if "admin" in words else words[-2:])
    open_store_or_exit(settings, command, create=create)

    async def go() -> T:
        database = await open_database(settings.metadata_target, create=True)
        try:
            accounts = Accounts(
                database.auth,
                limiter=login_limiter(settings.auth, None),
                bcrypt_cost=settings.auth.bcrypt_cost,
            )
            try:
                result = await action(accounts, database.auth)
            except (AccountError, AccountExists, ValueError) as exc:
                if audited is not None:
                    await _audit(database.audit, command, audited, "failure", str(exc))
                raise
            if audited is not None:
                outcome = "not_found" if result is False else "success"
                await _audit(database.audit, command, audited, outcome, None)
            return result
        finally:
            await database.close()

    try:
        return asyncio.run(go())
    except (AccountError, AccountExists, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def local_actor() -> str:
    """Who ran the command: `local:<login name>` (the uid when there is no passwd entry)."""
    try:
        return f"local:{getpass.getuser()}"
    except (OSError, KeyError):
        return f"local:uid={os.getuid()}"


async def _audit(
    store: AuditStore, command: str, about: Mapping[str, Any], outcome: str, error: str | None
) -> None:
    detail = {"command": command, **about}
    if error is not None:
        detail["error"] = error[:300]
    await store.append(
        [AuditEntry("admin", time.time(), actor=local_actor(), outcome=outcome, detail=detail)]
    )


def _password(stdin: bool) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\r\n")
    value: str = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    return value


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from stdin (one line).")
]


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- users ------------------------------------------------------------------------------------
@user_app.command("add")
def user_add(
    ctx: typer.Context,
    name: str,
    admin_flag: Annotated[bool, typer.Option("--admin", help="Full access, catalog too.")] = False,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a user (password prompted, or one line on stdin)."""
    validate_or_exit(name)
    password = _password(password_stdin)
    _run(
        ctx,
        lambda accounts, _s: accounts.add_user(name, password, admin=admin_flag),
        create=True,
        audited={"account": name, "admin": admin_flag},
    )
    typer.echo(f"user {name} created{' (admin)' if admin_flag else ''}")


def validate_or_exit(name: str) -> None:
    try:
        validate_account_name(name)
    except AccountError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@user_app.command("passwd")
def user_passwd(ctx: typer.Context, name: str, password_stdin: PasswordStdin = False) -> None:
    """Set a user's password (revokes its refresh tokens)."""
    password = _password(password_stdin)
    _run(ctx, lambda accounts, _s: accounts.set_password(name, password), audited={"account": name})
    typer.echo(f"password of {name} changed")


@user_app.command("del")
def user_del(ctx: typer.Context, name: str) -> None:
    """Delete a user (and its robots)."""
    if not _run(ctx, lambda _a, store: store.delete_account(name), audited={"account": name}):
        typer.echo(f"error: no account named {name}", err=True)
        raise typer.Exit(1)
    typer.echo(f"user {name} deleted")


def _set_disabled(ctx: typer.Context, name: str, disabled: bool) -> None:
    change = lambda _a, store: store.update_account(name, disabled=disabled)  # noqa: E731
    if not _run(ctx, change, audited={"account": name}):
        typer.echo(f"error: no account named {name}", err=True)
        raise typer.Exit(1)
    typer.echo(f"{name} {'disabled' if disabled else 'enabled'}")


@user_app.command("disable")
def user_disable(ctx: typer.Context, name: str) -> None:
    """Refuse logins of a user or robot (tokens already issued expire on their own)."""
    _set_disabled(ctx, name, True)


@user_app.command("enable")
def user_enable(ctx: typer.Context, name: str) -> None:
    """Allow logins again."""
    _set_disabled(ctx, name, False)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """Users and robots, one per line."""
    accounts = _run(ctx, lambda _a, store: store.list_accounts())
    for a in accounts:
        flags: list[str] = [a.kind]
        if a.admin:
            flags.append("admin")
        if a.disabled:
            flags.append("disabled")
        if a.expires_at is not None:
            flags.append(f"expires {_when(a.expires_at)}")
        typer.echo(f"{a.name}\t{' '.join(flags)}")


# -- robots -----------------------------------------------------------------------------------
@robot_app.command("add")
def robot_add(
    ctx: typer.Context,
    owner: str,
    name: str,
    expires_days: Annotated[
        float | None, typer.Option("--expires-days", help="Secret stops working after this.")
    ] = None,
) -> None:
    """Create robot `<owner>+<name>`; prints its secret once (give it rights with `acl add`)."""
    account, secret = _run(
        ctx,
        lambda accounts, _s: accounts.add_robot(
            owner, name, expires_in=expires_days * 86400 if expires_days else None
        ),
        audited={"account": f"{owner}+{name}"},
    )
    typer.echo(f"robot {account.name} created; expires {_when(account.expires_at)}", err=True)
    typer.echo(f"{account.name}\t{secret}")


@robot_app.command("del")
def robot_del(ctx: typer.Context, name: str) -> None:
    """Delete a robot account."""
    user_del(ctx, name)


# -- groups -----------------------------------------------------------------------------------
@group_app.command("add")
def group_add(ctx: typer.Context, group: str, account: str) -> None:
    """Put an account into a group."""
    validate_or_exit(group)
    _run(
        ctx,
        lambda _a, store: store.set_membership(group, account, True),
        create=True,
        audited={"group": group, "account": account},
    )
    typer.echo(f"{account} is in group {group}")


@group_app.command("del")
def group_del(ctx: typer.Context, group: str, account: str) -> None:
    """Take an account out of a group."""
    _run(
        ctx,
        lambda _a, store: store.set_membership(group, account, False),
        audited={"group": group, "account": account},
    )
    typer.echo(f"{account} is not in group {group}")


# -- ACL rules --------------------------------------------------------------------------------
@acl_app.command("add")
def acl_add(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="Account glob, `anonymous`, or `group:<name>`.")],
    repository: Annotated[
        str,
        typer.Argument(
            help="Repository glob (`*` also matches `/`). ${user} = the caller's name, only as a "
            "whole path component below literal ones: 'shared/${user}/*', not "
            "'shared/${user}-*' (that would reach user alice-x's 'shared/alice-x-…' for alice)."
        ),
    ],
    actions: Annotated[
        str,
        typer.Argument(help="Comma-separated: pull,push,delete, or * (also deletes trust data)."),
    ],
) -> None:
    """Allow `actions` on repositories matching `repository` to accounts matching `account`.

    Rules also cover the repositories' Notary GUNs (`HOST:PORT/<repository>` under
    `trust.gun_prefixes`).
    """
    acts = tuple(a.strip() for a in actions.split(",") if a.strip())
    try:
        validate_rule(account, repository, acts)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    rule_id = _run(
        ctx,
        lambda _a, store: store.add_rule(account, repository, acts),
        create=True,
        audited={"account": account, "repository": repository, "actions": list(acts)},
    )
    typer.echo(f"rule {rule_id}: {account} may {','.join(acts)} {repository}")


@acl_app.command("list")
def acl_list(ctx: typer.Context) -> None:
    """Stored rules (built-ins: admins everything, `*` too; each user `${user}` and
    `${user}/*`, and their GUNs)."""
    for rule in _run(ctx, lambda _a, store: store.list_rules()):
        typer.echo(f"{rule.id}\t{rule.account}\t{rule.repository}\t{','.join(rule.actions)}")


@acl_app.command("del")
def acl_del(ctx: typer.Context, rule_id: int) -> None:
    """Delete a rule by id."""
    if not _run(ctx, lambda _a, store: store.delete_rule(rule_id), audited={"rule": rule_id}):
        typer.echo(f"error: no rule {rule_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"rule {rule_id} deleted")
