"""Accounts: bcrypt, unknown vs wrong password cost the same, rate limits, robots, htpasswd."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.conftest import require
from trustyard.auth.users import (
    AccountError,
    Accounts,
    AuthFailed,
    HtpasswdFile,
    LoginLimiter,
    RateLimited,
    binding_of,
)
from trustyard.cache.memory import MemoryCache
from trustyard.metadata.auth_sql import SqlAuthStore
from trustyard.wiring import open_database


@pytest.fixture
async def store(tmp_path: Path) -> SqlAuthStore:
    s = (await open_database(tmp_path / "metadata.db", create=True)).auth
    yield s  # type: ignore[misc]
    await s.close()


async def test_users_authenticate_with_bcrypt(store: SqlAuthStore) -> None:
    accounts = Accounts(store, bcrypt_cost=4, limiter=LoginLimiter(cache=MemoryCache()))
    await accounts.add_user("alice", "s3cret")
    account = await store.get_account("alice")
    assert account is not None and account.secret_hash.startswith("$2b$04$")
    assert "s3cret" not in account.secret_hash
    who = await accounts.authenticate("alice", "s3cret", "10.0.0.1")
    assert who.name == "alice" and not who.admin
    with pytest.raises(AuthFailed, match="wrong password"):
        await accounts.authenticate("alice", "nope", "10.0.0.1")
    with pytest.raises(AuthFailed, match="unknown account"):
        await accounts.authenticate("mallory", "x", "10.0.0.1")


async def test_unknown_account_costs_a_bcrypt_check_too(store: SqlAuthStore) -> None:
    accounts = Accounts(
        store, bcrypt_cost=10, limiter=LoginLimiter(1000, 1000, cache=MemoryCache())
    )
    await accounts.add_user("alice", "s3cret")

    async def timed(name: str) -> float:
        start = time.perf_counter()
        with pytest.raises(AuthFailed):
            await accounts.authenticate(name, "wrong", "c")
        return time.perf_counter() - start

    known = min([await timed("alice") for _ in range(3)])
    unknown = min([await timed("nobody") for _ in range(3)])
    assert unknown > known * 0.5, (known, unknown)


async def test_rate_limit_per_account_and_per_client(store: SqlAuthStore) -> None:
    clock = [0.0]
    limiter = LoginLimiter(3, 5, 60, cache=MemoryCache(clock=lambda: clock[0]))
    accounts = Accounts(store, bcrypt_cost=4, limiter=limiter)
    await accounts.add_user("alice", "right")
    for _ in range(3):
        with pytest.raises(AuthFailed):
            await accounts.authenticate("alice", "wrong", "1.1.1.1")
    with pytest.raises(RateLimited) as info:
        await accounts.authenticate("alice", "right", "2.2.2.2")  # even the right password
    assert info.value.what == "account" and 1 <= info.value.retry_after <= 60
    # Another account from a fresh address is fine; one address spraying many names is not.
    for i in range(2):
        with pytest.raises(AuthFailed):
            await accounts.authenticate(f"user{i}", "x", "1.1.1.1")
    with pytest.raises(RateLimited) as info:
        await accounts.authenticate("someone", "x", "1.1.1.1")
    assert info.value.what == "ip"
    clock[0] += 61
    assert (await accounts.authenticate("alice", "right", "1.1.1.1")).name == "alice"


async def test_shared_limiter_counts_across_workers(store: SqlAuthStore) -> None:
    """Two workers' Accounts over one cache (Redis in production) share one limit."""
    clock = [1000.0]
    cache = MemoryCache(clock=lambda: clock[0])
    one, two = (
        Accounts(store, bcrypt_cost=4, limiter=LoginLimiter(3, 50, 60, cache=cache))
        for _ in range(2)
    )
    await one.add_user("alice", "right")
    for accounts in (one, two, one):
        with pytest.raises(AuthFailed):
            await accounts.authenticate("alice", "wrong", "1.1.1.1")
    for accounts in (two, one):
        with pytest.raises(RateLimited) as info:
            await accounts.authenticate("alice", "right", "2.2.2.2")
        assert info.value.what == "account" and info.value.retry_after == 60
    clock[0] += 30
    with pytest.raises(RateLimited) as info:
        await two.authenticate("alice", "right", "2.2.2.2")
    assert info.value.retry_after == 30
    clock[0] += 31
    assert (await two.authenticate("alice", "right", "1.1.1.1")).name == "alice"


async def test_robots_expire_and_can_be_disabled(store: SqlAuthStore) -> None:
    clock = [1000.0]
    accounts = Accounts(
        store, bcrypt_cost=4, clock=lambda: clock[0], limiter=LoginLimiter(cache=MemoryCache())
    )
    await accounts.add_user("alice", "pw")
    robot, secret = await accounts.add_robot("alice", "ci", expires_in=3600)
    assert robot.name == "alice+ci" and robot.kind == "robot" and len(secret) >= 40
    assert (await accounts.authenticate("alice+ci", secret, "c")).kind == "robot"
    clock[0] += 3601
    with pytest.raises(AuthFailed, match="expired"):
        await accounts.authenticate("alice+ci", secret, "c")
    robot2, secret2 = await accounts.add_robot("alice", "deploy")
    await store.update_account(robot2.name, disabled=True)
    with pytest.raises(AuthFailed, match="disabled"):
        await accounts.authenticate(robot2.name, secret2, "c")
    with pytest.raises(AccountError):
        await accounts.add_robot("nobody", "x")


async def test_password_change_revokes_refresh_binding(store: SqlAuthStore) -> None:
    accounts = Accounts(store, bcrypt_cost=4, limiter=LoginLimiter(cache=MemoryCache()))
    account = await accounts.add_user("alice", "one")
    old = binding_of(account)
    assert (await accounts.refresh("alice", old)).name == "alice"
    await accounts.set_password("alice", "two")
    with pytest.raises(AuthFailed, match="password change"):
        await accounts.refresh("alice", old)


async def test_names_and_passwords_are_validated(store: SqlAuthStore) -> None:
    accounts = Accounts(store, bcrypt_cost=4, limiter=LoginLimiter(cache=MemoryCache()))
    for bad in ["Alice", "a*", "a/b", "../x", "", "a" * 65]:
        with pytest.raises(AccountError):
            await accounts.add_user(bad, "pw")
    with pytest.raises(AccountError, match="72"):
        await accounts.add_user("long", "x" * 73)


async def test_htpasswd_file_from_apache_htpasswd(store: SqlAuthStore, tmp_path: Path) -> None:
    exe = require("htpasswd")
    path = tmp_path / "htpasswd"
    subprocess.run([exe, "-B", "-b", "-c", str(path), "carol", "pa:ss"], check=True)
    assert path.read_text().startswith("carol:$2y$")
    accounts = Accounts(
        store, bcrypt_cost=4, htpasswd=HtpasswdFile(path), limiter=LoginLimiter(cache=MemoryCache())
    )
    assert (await accounts.authenticate("carol", "pa:ss", "c")).name == "carol"
    with pytest.raises(AuthFailed):
        await accounts.authenticate("carol", "pa", "c")
