"""Authorization: which actions an account may take on a resource (ACL rules + built-ins).

Built-in rules: admins may do anything, including `registry:catalog:*`; every user owns
`${user}` and `${user}/*` (pull, push, delete). Stored rules add to that (allow-only, the union
of every matching rule): the account side is a glob over account names, `anonymous` (applies to
everyone, logged in or not: anonymous pull per pattern), or `group:<name>`; the repository side
is a glob where `${user}` stands for the caller's name.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable

from trustyard.auth.scopes import ACTIONS, Scope, valid_repository_name
from trustyard.auth.users import Principal
from trustyard.metadata.auth_base import AclRule

ALL_ACTIONS = ("pull", "push", "delete")


def _account_matches(pattern: str, principal: Principal) -> bool:
    if pattern == "anonymous":
        return True
    if principal.anonymous:
        return False
    if pattern.startswith("group:"):
        return pattern[6:] in principal.groups
    return fnmatch.fnmatchcase(principal.name, pattern)


def _repo_matches(pattern: str, principal: Principal, name: str) -> bool:
    if "${user}" in pattern:
        if principal.anonymous:
            return False
        pattern = pattern.replace("${user}", principal.name)
    return fnmatch.fnmatchcase(name, pattern)


def validate_rule(account: str, repository: str, actions: tuple[str, ...]) -> None:
    bad = [a for a in actions if a not in ACTIONS]
    if bad or not actions:
        raise ValueError(f"actions must be among {', '.join(ACTIONS)}; got {', '.join(actions)}")
    if not account or not repository:
        raise ValueError("a rule needs an account pattern and a repository pattern")


class AccessPolicy:
    """Evaluates rules; reloads them from the store at most every `ttl` seconds."""

    def __init__(
        self,
        load_rules: Callable[[], Awaitable[list[AclRule]]],
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load_rules
        self._ttl = ttl
        self._clock = clock
        self._rules: list[AclRule] = []
        self._loaded_at = float("-inf")

    async def rules(self) -> list[AclRule]:
        now = self._clock()
        if now - self._loaded_at >= self._ttl:
            self._rules = await self._load()
            self._loaded_at = now
        return self._rules

    async def allowed(self, principal: Principal, rtype: str, name: str) -> set[str]:
        if rtype == "registry":
            return {"*"} if principal.admin and name == "catalog" else set()
        if rtype != "repository" or not valid_repository_name(name):
            return set()
        if principal.admin:
            return set(ALL_ACTIONS)
        granted: set[str] = set()
        if principal.kind == "user" and (
            name == principal.name or name.startswith(principal.name + "/")
        ):
            granted.update(ALL_ACTIONS)
        for rule in await self.rules():
            if _account_matches(rule.account, principal) and _repo_matches(
                rule.repository, principal, name
            ):
                granted.update(ALL_ACTIONS if "*" in rule.actions else rule.actions)
        return granted

    async def grant(self, principal: Principal, requested: list[Scope]) -> list[Scope]:
        """The intersection of what was asked and what is allowed; never an error."""
        out: dict[tuple[str, str], list[str]] = {}
        for scope in requested:
            allowed = await self.allowed(principal, scope.type, scope.name)
            if not allowed:
                continue
            acts: list[str] = []
            for action in scope.actions:
                if action == "*":
                    acts.extend(
                        ["*"] if "*" in allowed else [a for a in ALL_ACTIONS if a in allowed]
                    )
                elif action in allowed or "*" in allowed:
                    acts.append(action)
            if acts:
                merged = out.setdefault((scope.type, scope.name), [])
                merged.extend(a for a in acts if a not in merged)
        return [Scope(t, n, tuple(a)) for (t, n), a in out.items()]
