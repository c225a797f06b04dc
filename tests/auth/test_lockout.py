"""Login lockout under concurrency (in-process and Redis counters), what a success gives back,
bcrypt cost upgrades on login, and htpasswd names in token mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import bcrypt
import pytest
from structlog.testing import capture_logs

from tests.services.redis import RedisServer
from trustyard.auth.users import (
    Accounts,
    AuthFailed,
    HtpasswdFile,
    LoginLimiter,
    RateLimited,
    bcrypt_cost_of,
)
from trustyard.cache.base import Cache
from trustyard.cache.memory import MemoryCache
from trustyard.cache.redis import RedisCache
from trustyard.metadata.auth_base import Account
from trustyard.metadata.auth_sql import SqlAuthStore
from trustyard.wiring import open_database

COST = 8  # slow enough (~15 ms) that 60 checks really overlap


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlAuthStore]:
    s = (await open_database(tmp_path / "metadata.db", create=True)).auth
    yield s
    await s.close()


async def burst(
    workers: list[Accounts], name: str, secret: str, n: int = 60, client: str = "10.0.0.1"
) -> tuple[int, int]:
    """`n` concurrent logins spread over `workers`: (evaluated and refused, rate limited)."""

    async def one(i: int) -> str:
        try:
            await workers[i % len(workers)].authenticate(name, secret, client)
        except AuthFailed:
            return "failed"
        except RateLimited:
            return "limited"
        return "ok"

    answers = await asyncio.gather(*(one(i) for i in range(n)))
    assert "ok" not in answers
    return answers.count("failed"), answers.count("limited")


async def check_burst(workers: list[Accounts]) -> None:
    await workers[0].add_user("alice", "right-pw")
    failed, limited = await burst(workers, "alice", "wrong")
    assert (failed, limited) == (5, 55)
    # The right password is refused for the window, by every worker.
    for accounts in workers:
        with pytest.raises(RateLimited) as info:
            await accounts.authenticate("alice", "right-pw", "10.9.9.9")
        assert info.value.what == "account" and 250 <= info.value.retry_after <= 300
    # Another account is not affected.
    await workers[0].add_user("bob", "bob-pw")
    assert (await workers[-1].authenticate("bob", "bob-pw", "10.0.0.1")).name == "bob"


async def test_concurrent_wrong_passwords_in_process(store: SqlAuthStore) -> None:
    accounts = Accounts(
        store, bcrypt_cost=COST, limiter=LoginLimiter(5, 1000, 300, cache=MemoryCache())
    )
    await check_burst([accounts])


async def test_concurrent_wrong_passwords_over_redis(
    store: SqlAuthStore, redis_server: RedisServer
) -> None:
    """Three workers, each with its own Redis connection, share one limit."""
    caches: list[Cache] = [RedisCache(redis_server.url) for _ in range(3)]
    workers = [
        Accounts(store, bcrypt_cost=COST, limiter=LoginLimiter(5, 1000, 300, cache=c))
        for c in caches
    ]
    try:
        await check_burst(workers)
    finally:
        for c in caches:
            await c.close()


async def test_one_address_spraying_names_is_bounded_too(store: SqlAuthStore) -> None:
    accounts = Accounts(
        store, bcrypt_cost=COST, limiter=LoginLimiter(5, 20, 300, cache=MemoryCache())
    )

    async def one(i: int) -> str:
        try:
            await accounts.authenticate(f"user{i}", "guess", "10.6.6.6")
        except AuthFailed:
            return "failed"
        except RateLimited as exc:
            return exc.what
        return "ok"

    answers = await asyncio.gather(*(one(i) for i in range(60)))
    assert answers.count("failed") == 20 and answers.count("ip") == 40


async def test_success_gives_back_its_attempt_and_clears_failures(store: SqlAuthStore) -> None:
    accounts = Accounts(store, bcrypt_cost=4, limiter=LoginLimiter(3, 3, 300, cache=MemoryCache()))
    await accounts.add_user("ci", "pw")
    # Successful logins do not use up the address's budget (a CI runner logs in often).
    for _ in range(10):
        assert (await accounts.authenticate("ci", "pw", "10.1.1.1")).name == "ci"
    # Two typos, a success, two more typos: the success cleared the account's failures.
    limiter = LoginLimiter(3, 1000, 300, cache=MemoryCache())
    accounts = Accounts(store, bcrypt_cost=4, limiter=limiter)
    for _ in range(2):
        with pytest.raises(AuthFailed):
            await accounts.authenticate("ci", "typo", "10.1.1.2")
    await accounts.authenticate("ci", "pw", "10.1.1.2")
    for _ in range(2):
        with pytest.raises(AuthFailed):
            await accounts.authenticate("ci", "typo", "10.1.1.2")
    await accounts.authenticate("ci", "pw", "10.1.1.2")


async def test_limits_with_a_fake_clock() -> None:
    clock = [0.0]
    limiter = LoginLimiter(2, 100, 60, cache=MemoryCache(clock=lambda: clock[0]))
    await limiter.reserve("account:a")
    clock[0] = 50.0
    await limiter.reserve("account:a")  # reaches the limit: a full window from now
    clock[0] = 100.0
    with pytest.raises(RateLimited) as info:
        await limiter.reserve("account:a")
    assert info.value.retry_after == 10
    clock[0] = 110.0
    await limiter.reserve("account:a")


# -- bcrypt cost upgrades -----------------------------------------------------------------------
async def test_old_cost_hash_is_upgraded_on_login(store: SqlAuthStore) -> None:
    old = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    await store.create_account(Account("old", "user", old))
    accounts = Accounts(store, bcrypt_cost=6, limiter=LoginLimiter(100, 100, cache=MemoryCache()))
    with pytest.raises(AuthFailed):
        await accounts.authenticate("old", "wrong", "c")
    stored = await store.get_account("old")
    assert stored is not None and stored.secret_hash == old  # a wrong password changes nothing
    with capture_logs() as logs:
        assert (await accounts.authenticate("old", "pw", "c")).name == "old"
    stored = await store.get_account("old")
    assert stored is not None and bcrypt_cost_of(stored.secret_hash) == 6
    assert bcrypt.checkpw(b"pw", stored.secret_hash.encode())
    assert any(e["event"] == "password_rehashed" and e["old_cost"] == 4 for e in logs)
    assert "pw" not in repr([e for e in logs if e["event"] == "password_rehashed"])
    # At the current cost: left alone.
    assert (await accounts.authenticate("old", "pw", "c")).name == "old"
    again = await store.get_account("old")
    assert again is not None and again.secret_hash == stored.secret_hash


async def test_rehash_never_undoes_a_concurrent_password_change(store: SqlAuthStore) -> None:
    old = bcrypt.hashpw(b"leaked", bcrypt.gensalt(rounds=4)).decode()
    await store.create_account(Account("victim", "user", old))
    accounts = Accounts(store, bcrypt_cost=6, limiter=LoginLimiter(cache=MemoryCache()))
    before = await store.get_account("victim")
    assert before is not None
    await accounts.set_password("victim", "new-secret")  # while a login with the old one runs
    await accounts._rehash(before, "leaked")
    with pytest.raises(AuthFailed):
        await accounts.authenticate("victim", "leaked", "c")
    assert (await accounts.authenticate("victim", "new-secret", "c")).name == "victim"


async def test_long_secret_is_rehashed_as_checked(store: SqlAuthStore) -> None:
    secret = "é" * 50  # 100 bytes: bcrypt compares the first 72
    old = bcrypt.hashpw(secret.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    await store.create_account(Account("long", "user", old))
    accounts = Accounts(store, bcrypt_cost=5, limiter=LoginLimiter(cache=MemoryCache()))
    await accounts.authenticate("long", secret, "c")
    stored = await store.get_account("long")
    assert stored is not None and bcrypt_cost_of(stored.secret_hash) == 5
    assert (await accounts.authenticate("long", secret, "c")).name == "long"


# -- htpasswd names in token mode ---------------------------------------------------------------
def test_htpasswd_names_are_validated_in_token_mode(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "htpasswd"
    names = ["good-user", "Alice", "a*", "bob+robot", "x/../y", "-lead", "a" * 65, "ok.two"]
    path.write_text("".join(f"{n}:{hashed}\n" for n in names))
    with capture_logs() as logs:
        entries = HtpasswdFile(path, strict_names=True).entries()
    assert sorted(entries) == ["good-user", "ok.two"]
    skipped = [e for e in logs if e["event"] == "htpasswd_entry_skipped"]
    assert [e["line"] for e in skipped] == [2, 3, 4, 5, 6, 7]
    assert all("invalid name" in e["reason"] and hashed not in str(e) for e in skipped)
    # Without token mode (htpasswd mode grants every user everything) names are taken as is.
    assert len(HtpasswdFile(path).entries()) == len(names)


async def test_htpasswd_bad_name_cannot_log_in_in_token_mode(
    store: SqlAuthStore, tmp_path: Path
) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "htpasswd"
    path.write_text(f"a*:{hashed}\ncarol:{hashed}\n")
    accounts = Accounts(
        store,
        bcrypt_cost=4,
        htpasswd=HtpasswdFile(path, strict_names=True),
        limiter=LoginLimiter(cache=MemoryCache()),
    )
    with pytest.raises(AuthFailed, match="unknown account"):
        await accounts.authenticate("a*", "pw", "c")
    assert (await accounts.authenticate("carol", "pw", "c")).name == "carol"
