"""Accounts: users and robots, bcrypt secrets, htpasswd files, and failed-login rate limiting.

Every secret check costs one bcrypt verification, whether or not the account exists (a dummy
hash stands in), so timing does not tell which names exist. Failures are counted per account and
per client address; past the limit the answer is 429 with Retry-After until the window passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from trustyard.cache import Cache
from trustyard.metadata.auth_base import Account, AccountStore

NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
MAX_NAME = 64
MAX_SECRET_BYTES = 72  # bcrypt's limit; Apache htpasswd truncates there too
ROBOT_SEPARATOR = "+"
REFRESH_CACHE_SECONDS = 5.0


class AccountError(ValueError):
    """A user-facing problem with an account operation (bad name, unknown user…)."""


class AuthFailed(Exception):
    """Credentials were refused. `reason` is for the log; clients hear a generic message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RateLimited(Exception):
    def __init__(self, retry_after: int, what: str) -> None:
        self.retry_after = retry_after
        self.what = what
        super().__init__(f"too many failed logins for {what}; retry in {retry_after} s")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking. `name == ""` is anonymous."""

    name: str
    kind: str = "anonymous"
    admin: bool = False
    groups: tuple[str, ...] = ()

    @property
    def anonymous(self) -> bool:
        return self.name == ""


ANONYMOUS = Principal("")


def validate_account_name(name: str) -> str:
    if len(name) > MAX_NAME or not NAME_RE.match(name):
        raise AccountError(
            f"invalid name {name[:80]!r}: use 1-{MAX_NAME} characters of [a-z0-9] separated by "
            "'.', '_' or '-' (a name is also the user's repository namespace)"
        )
    return name


def hash_secret(secret: str, cost: int) -> str:
    raw = secret.encode()
    if len(raw) > MAX_SECRET_BYTES:
        raise AccountError(f"password is {len(raw)} bytes; bcrypt uses at most 72")
    if not raw:
        raise AccountError("password is empty")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=cost)).decode()


def check_secret(secret: str, secret_hash: str) -> bool:
    """bcrypt verification (constant-time compare inside); also for `$2y$` htpasswd hashes."""
    try:
        return bcrypt.checkpw(secret.encode()[:MAX_SECRET_BYTES], secret_hash.encode())
    except ValueError:
        return False


def binding_of(account: Account) -> str:
    """Ties refresh tokens to the account's current secret: a new password revokes them."""
    return hashlib.sha256(account.secret_hash.encode()).hexdigest()[:24]


# -- rate limiting ----------------------------------------------------------------------------
@dataclass
class LoginLimiter:
    """Failed-login counters per key (account or client address) in a fixed window.

    In-process: with several workers each counts on its own, so the effective limit is at most
    workers times the limit (documented in docs/auth.md). `SharedLoginLimiter` shares the
    counters between workers and replicas through the cache (Redis).
    """

    max_failures: int = 5
    max_failures_per_client: int = 20
    window_seconds: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)

    def _limit(self, key: str) -> int:
        return self.max_failures_per_client if key.startswith("ip:") else self.max_failures

    async def check(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            count, start = self._failures.get(key, (0, now))
            if now - start >= self.window_seconds:
                self._failures.pop(key, None)
                continue
            if count >= self._limit(key):
                retry = max(1, int(start + self.window_seconds - now + 0.999))
                raise RateLimited(retry, key.split(":", 1)[0])

    async def failed(self, *keys: str) -> None:
        now = self.clock()
        if len(self._failures) > 100_000:
            self._failures = {
                k: v for k, v in self._failures.items() if now - v[1] < self.window_seconds
            }
        for key in keys:
            count, start = self._failures.get(key, (0, now))
            if now - start >= self.window_seconds:
                count, start = 0, now
            self._failures[key] = (count + 1, start)

    async def succeeded(self, account_key: str) -> None:
        self._failures.pop(account_key, None)


class SharedLoginLimiter(LoginLimiter):
    """The same limits, counted in the shared cache so every worker and replica sees them.

    A failure adds one to `login-fail:<key>` (a counter whose window starts at its first
    increment); the failure that reaches the limit writes `login-block:<key>` holding the wall
    clock time the block ends, for `window_seconds`. `check` reads only the block, so a login
    attempt costs one cache read. Keys are `account:<name>` or `ip:<address>`: never a secret.
    """

    def __init__(
        self,
        cache: Cache,
        max_failures: int = 5,
        max_failures_per_client: int = 20,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(max_failures, max_failures_per_client, window_seconds, clock)
        self.cache = cache

    async def check(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            until = await self.cache.get("login-block:" + key)
            if until is None:
                continue
            try:
                remaining = float(until) - now
            except ValueError:
                remaining = self.window_seconds
            if remaining > 0:
                raise RateLimited(max(1, int(remaining + 0.999)), key.split(":", 1)[0])

    async def failed(self, *keys: str) -> None:
        for key in keys:
            count = await self.cache.incr("login-fail:" + key, self.window_seconds)
            if count >= self._limit(key):
                until = self.clock() + self.window_seconds
                await self.cache.set(
                    "login-block:" + key, repr(until).encode(), self.window_seconds
                )

    async def succeeded(self, account_key: str) -> None:
        await self.cache.delete("login-fail:" + account_key)


# -- htpasswd ---------------------------------------------------------------------------------
class HtpasswdFile:
    """Apache `htpasswd -B` / Distribution htpasswd file: `user:$2y$…` lines, reread on change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._entries: dict[str, str] = {}

    def entries(self) -> dict[str, str]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            entries: dict[str, str] = {}
            for line in self.path.read_text().splitlines():
                line = line.strip()
                if not line or line.startswith("#") or ":" not in line:
                    continue
                user, hashed = line.split(":", 1)
                if hashed.startswith(("$2y$", "$2b$", "$2a$")):
                    entries[user] = hashed
            self._entries, self._mtime = entries, mtime
        return self._entries


# -- the account service ----------------------------------------------------------------------


class Accounts:
    """Users and robots: management (CLI) and authentication (token server, htpasswd mode)."""

    def __init__(
        self,
        store: AccountStore,
        *,
        bcrypt_cost: int = 12,
        limiter: LoginLimiter | None = None,
        htpasswd: HtpasswdFile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bcrypt_cost = bcrypt_cost
        self.limiter = limiter or LoginLimiter()
        self.htpasswd = htpasswd
        self.clock = clock
        self._refresh_cache: dict[str, tuple[float, Account | None, Principal | None]] = {}
        self._dummy = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=bcrypt_cost)).decode()

    # -- management ----------------------------------------------------------------------------
    async def add_user(self, name: str, password: str, *, admin: bool = False) -> Account:
        validate_account_name(name)
        account = Account(
            name,
            "user",
            await asyncio.to_thread(hash_secret, password, self.bcrypt_cost),
            admin=admin,
            created_at=self.clock(),
        )
        await self.store.create_account(account)
        return account

    async def set_password(self, name: str, password: str) -> None:
        account = await self.store.get_account(name)
        if account is None:
            raise AccountError(f"no account named {name}")
        hashed = await asyncio.to_thread(hash_secret, password, self.bcrypt_cost)
        await self.store.update_account(name, secret_hash=hashed)
        self._refresh_cache.pop(name, None)

    async def add_robot(
        self, owner: str, name: str, *, expires_in: float | None = None
    ) -> tuple[Account, str]:
        """A robot `<owner>+<name>` with a generated secret (shown once)."""
        validate_account_name(name)
        if await self.store.get_account(owner) is None:
            raise AccountError(f"no user named {owner} to own the robot")
        secret = secrets.token_urlsafe(32)
        account = Account(
            f"{owner}{ROBOT_SEPARATOR}{name}",
            "robot",
            await asyncio.to_thread(hash_secret, secret, self.bcrypt_cost),
            expires_at=self.clock() + expires_in if expires_in else None,
            owner=owner,
            created_at=self.clock(),
        )
        await self.store.create_account(account)
        return account, secret

    # -- authentication ------------------------------------------------------------------------
    def usable(self, account: Account) -> str | None:
        """Why the account cannot log in now, or None."""
        if account.disabled:
            return f"account {account.name} is disabled"
        if account.expires_at is not None and self.clock() >= account.expires_at:
            return f"account {account.name} expired"
        return None

    async def principal(self, account: Account) -> Principal:
        return Principal(
            account.name,
            account.kind,
            account.admin,
            tuple(await self.store.groups_of(account.name)),
        )

    async def authenticate(self, name: str, secret: str, client: str) -> Principal:
        """Check a name and secret; raises RateLimited or AuthFailed (reason for the log)."""
        keys = (f"account:{name[:MAX_NAME]}", f"ip:{client}")
        await self.limiter.check(*keys)
        account = await self.store.get_account(name) if len(name) <= 255 else None
        htpasswd_hash = None
        if account is None and self.htpasswd is not None:
            htpasswd_hash = self.htpasswd.entries().get(name)
        stored = account.secret_hash if account else htpasswd_hash
        ok = await asyncio.to_thread(check_secret, secret, stored or self._dummy)
        if not ok or stored is None:
            await self.limiter.failed(*keys)
            raise AuthFailed(
                f"wrong password for {name[:MAX_NAME]!r}"
                if stored
                else f"unknown account {name[:MAX_NAME]!r}"
            )
        if account is None:
            await self.limiter.succeeded(keys[0])
            return Principal(name, "user")
        problem = self.usable(account)
        if problem:
            raise AuthFailed(problem)
        await self.limiter.succeeded(keys[0])
        return await self.principal(account)

    async def refresh(self, name: str, binding: str) -> Principal:
        """The account behind a refresh token, if it is still usable and its secret unchanged.

        Account lookups are cached for `REFRESH_CACHE_SECONDS` (refresh grants are the hot path:
        every docker/podman operation after login), so a password change, disable or delete
        takes up to that long to stop refresh grants.
        """
        now = time.monotonic()
        cached = self._refresh_cache.get(name)
        if cached is None or cached[0] <= now:
            account = await self.store.get_account(name)
            principal = await self.principal(account) if account is not None else None
            if len(self._refresh_cache) > 10_000:
                self._refresh_cache.clear()
            self._refresh_cache[name] = (now + REFRESH_CACHE_SECONDS, account, principal)
        else:
            _, account, principal = cached
        if account is None or principal is None:
            raise AuthFailed(f"refresh token for unknown account {name[:MAX_NAME]!r}")
        if not hmac.compare_digest(binding_of(account), binding):
            raise AuthFailed(f"refresh token of {name} predates a password change; log in again")
        problem = self.usable(account)
        if problem:
            raise AuthFailed(problem)
        return principal
