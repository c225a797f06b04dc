"""Accounts: users and robots, bcrypt secrets, htpasswd files, and failed-login rate limiting.

Every secret check costs one bcrypt verification, whether or not the account exists (a dummy
hash stands in), and hashes of an older cost are upgraded on login, so timing does not tell which
names exist nor how old an account is. Attempts are reserved per account and per client address
before bcrypt runs; past the limit the answer is 429 with Retry-After until the window passes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import structlog

from trustyard.cache.base import Cache
from trustyard.metadata.auth_base import Account, AccountStore

log = structlog.get_logger("trustyard.auth")

# Whole-string match (fullmatch): `$` would also match before a trailing newline ("alice\n").
NAME_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
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
    if len(name) > MAX_NAME or not NAME_RE.fullmatch(name):
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


def bcrypt_cost_of(secret_hash: str) -> int | None:
    """The cost of a `$2b$12$…` hash, None when it is not one."""
    parts = secret_hash.split("$")
    if len(parts) < 4 or not parts[2].isdigit():
        return None
    return int(parts[2])


def binding_of(account: Account) -> str:
    """Ties refresh tokens to the account's current secret: a new password revokes them."""
    return hashlib.sha256(account.secret_hash.encode()).hexdigest()[:24]


# -- rate limiting ----------------------------------------------------------------------------
class LoginLimiter:
    """Login attempts per key (account or client address) in a fixed window.

    An attempt is reserved before its password is checked: one atomic step checks every key
    against its limit and counts the attempt, so a burst of concurrent wrong passwords gets at
    most the limit evaluated (the rest are refused before bcrypt). A wrong password keeps its
    reservation (a failure); the right one clears the account's failures and gives the
    address's reservation back. The attempt that fills a limit starts a full window: after it,
    even the right password is refused until the window passes.

    Counters live in `cache`, which wiring picks: in-process (each worker counts on its own, so
    the effective limit is at most workers times the limit, see docs/auth.md), or the shared cache
    (Redis), where every worker and replica counts against one limit. Keys are
    `login:account:<name>` and `login:ip:<address>`: never a secret.
    """

    def __init__(
        self,
        max_failures: int = 5,
        max_failures_per_client: int = 20,
        window_seconds: float = 300.0,
        *,
        cache: Cache,
    ) -> None:
        self.max_failures = max_failures
        self.max_failures_per_client = max_failures_per_client
        self.window_seconds = window_seconds
        self.cache = cache

    def _limit(self, key: str) -> int:
        return self.max_failures_per_client if key.startswith("ip:") else self.max_failures

    async def reserve(self, *keys: str) -> None:
        """Count one attempt for every key, or raise RateLimited (and count nothing)."""
        full = await self.cache.reserve(
            {"login:" + key: self._limit(key) for key in keys}, self.window_seconds
        )
        if full is not None:
            key, seconds = full
            retry = max(1, math.ceil(min(seconds, self.window_seconds)))
            raise RateLimited(retry, key.split(":", 2)[1])

    async def succeeded(self, account_key: str, *other_keys: str) -> None:
        """The right secret: forget the account's failures, give back the others' attempt."""
        await self.cache.delete("login:" + account_key)
        for key in other_keys:
            await self.cache.release("login:" + key)


# -- htpasswd ---------------------------------------------------------------------------------
class HtpasswdFile:
    """Apache `htpasswd -B` / Distribution htpasswd file: `user:$2y$…` lines, reread on change.

    `strict_names` (token mode, where a name becomes `${user}` in ACL rules and owns the
    namespace `<name>/*`): lines whose name `admin user add` would refuse are skipped, each
    with a log line naming the line number.
    """

    def __init__(self, path: Path, *, strict_names: bool = False) -> None:
        self.path = path
        self.strict_names = strict_names
        self._mtime = -1.0
        self._entries: dict[str, str] = {}

    def entries(self) -> dict[str, str]:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            entries: dict[str, str] = {}
            for number, line in enumerate(self.path.read_text().splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#") or ":" not in line:
                    continue
                user, hashed = line.split(":", 1)
                if not hashed.startswith(("$2y$", "$2b$", "$2a$")):
                    continue
                if self.strict_names:
                    try:
                        validate_account_name(user)
                    except AccountError as exc:
                        log.warning(
                            "htpasswd_entry_skipped",
                            path=str(self.path),
                            line=number,
                            reason=str(exc),
                        )
                        continue
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
        limiter: LoginLimiter,
        bcrypt_cost: int = 12,
        htpasswd: HtpasswdFile | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bcrypt_cost = bcrypt_cost
        self.limiter = limiter
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
        """Check a name and secret; raises RateLimited or AuthFailed (reason for the log).

        The attempt is reserved before bcrypt runs (see `LoginLimiter`). A stored hash of
        another bcrypt cost is replaced at the current cost once its secret is known, so that
        old accounts do not stand out by the time their check takes.
        """
        keys = (f"account:{name[:MAX_NAME]}", f"ip:{client}")
        await self.limiter.reserve(*keys)
        # No account name has a NUL (PostgreSQL refuses one in a query: it was a 500).
        usable_name = len(name) <= 255 and "\x00" not in name
        account = await self.store.get_account(name) if usable_name else None
        htpasswd_hash = None
        if account is None and self.htpasswd is not None:
            htpasswd_hash = self.htpasswd.entries().get(name)
        stored = account.secret_hash if account else htpasswd_hash
        ok = await asyncio.to_thread(check_secret, secret, stored or self._dummy)
        if not ok or stored is None:
            raise AuthFailed(
                f"wrong password for {name[:MAX_NAME]!r}"
                if stored
                else f"unknown account {name[:MAX_NAME]!r}"
            )
        await self.limiter.succeeded(*keys)
        if account is None:
            return Principal(name, "user")
        problem = self.usable(account)
        if problem:
            raise AuthFailed(problem)
        if bcrypt_cost_of(account.secret_hash) != self.bcrypt_cost:
            await self._rehash(account, secret)
        return await self.principal(account)

    async def _rehash(self, account: Account, secret: str) -> None:
        """Store the secret at the current cost, unless the hash changed meanwhile (a password
        change racing this login must win)."""
        raw = secret.encode()[:MAX_SECRET_BYTES]  # what check_secret compared
        salt = bcrypt.gensalt(rounds=self.bcrypt_cost)
        hashed = (await asyncio.to_thread(bcrypt.hashpw, raw, salt)).decode()
        if await self.store.update_account(
            account.name, secret_hash=hashed, replaces=account.secret_hash
        ):
            self._refresh_cache.pop(account.name, None)
            log.info(
                "password_rehashed",
                account=account.name,
                old_cost=bcrypt_cost_of(account.secret_hash),
                cost=self.bcrypt_cost,
            )

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
