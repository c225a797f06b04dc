"""Authorization: which actions an account may take on a resource (ACL rules + built-ins).

Built-in rules: admins may do anything (`*`: pull, push, delete and deleting trust data),
including `registry:catalog:*`; every user owns `${user}` and `${user}/*` (pull, push, delete).
Stored rules add to that (allow-only, the union of every matching rule): the account side is a
glob over account names, `anonymous` (applies to everyone, logged in or not: anonymous pull per
pattern), or `group:<name>`; the repository side is a glob (`*` crosses `/`) in which `${user}`
stands for the caller's name. A rule listing `*` grants `*` too.

`${user}` is always a whole path component below literal components (`shared/${user}/*`,
never `shared/${user}-*` nor `*/${user}`): then every user's grant is a subtree of its own
that no other name can reach (`shared/alice/…` is not `shared/alice-x/…`). Rules breaking this
are refused by `admin acl add` and ignored (with a warning) if found in the store.

A Notary GUN names a repository behind the registry's address (`HOST:PORT/alice/app`): for a
name under one of the configured GUN prefixes the rules are evaluated for the repository as
well, so ownership and ACLs follow a repository into its trust data, and no further.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Awaitable, Callable, Iterable

import structlog

from trustyard.auth.scopes import ACTIONS, Scope, valid_repository_name
from trustyard.auth.users import Principal
from trustyard.metadata.auth_base import AclRule
from trustyard.oci.reference import NAME_RE

log = structlog.get_logger("trustyard.auth")

USER = "${user}"
ALL_ACTIONS = ("pull", "push", "delete")
EVERYTHING = frozenset({"*", *ALL_ACTIONS})
_GLOB = re.compile(r"[*?\[\]]")
_PREFIX_RE = re.compile(
    r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*/$"
)


def _account_matches(pattern: str, principal: Principal) -> bool:
    if pattern == "anonymous":
        return True
    if principal.anonymous:
        return False
    if pattern.startswith("group:"):
        return pattern[6:] in principal.groups
    return fnmatch.fnmatchcase(principal.name, pattern)


def check_repository_pattern(pattern: str) -> None:
    """Refuse a `${user}` that is not one whole path component below literal components."""
    if pattern.count(USER) > 1:
        raise ValueError(f"{pattern!r}: ${{user}} may appear only once")
    if "${" in pattern.replace(USER, "", 1):
        raise ValueError(f"{pattern!r}: the only placeholder is ${{user}}")
    if USER not in pattern:
        return
    parts = pattern.split("/")
    at = next(i for i, part in enumerate(parts) if USER in part)
    if parts[at] != USER:
        raise ValueError(
            f"{pattern!r}: ${{user}} must be a whole path component, as in "
            f"'{'/'.join([*parts[:at], USER, '*'])}'; text glued to it would also match other "
            f"users' names (for alice, 'shared/${{user}}-*' matches 'shared/alice-x-…' of user "
            "alice-x)"
        )
    if any(_GLOB.search(part) or not part for part in parts[:at]):
        raise ValueError(
            f"{pattern!r}: the path components before ${{user}} must be literal names (no *, ? "
            "or [...]), so that each user's repositories are one subtree no other user reaches"
        )


def _repo_matches(pattern: str, principal: Principal, name: str) -> bool:
    """Rules must have passed `check_repository_pattern` (see `AccessPolicy.rules`)."""
    if USER not in pattern:
        return fnmatch.fnmatchcase(name, pattern)
    if principal.anonymous:
        return False
    head, _, tail = pattern.partition(USER)
    own = head + principal.name
    if not name.startswith(own):
        return False
    rest = name[len(own) :]
    if not tail:
        return not rest
    # `tail` starts with "/": what follows matches only inside the user's own subtree.
    return rest.startswith("/") and fnmatch.fnmatchcase(rest, tail)


def validate_rule(account: str, repository: str, actions: tuple[str, ...]) -> None:
    bad = [a for a in actions if a not in ACTIONS]
    if bad or not actions:
        raise ValueError(f"actions must be among {', '.join(ACTIONS)}; got {', '.join(actions)}")
    if not account or not repository:
        raise ValueError("a rule needs an account pattern and a repository pattern")
    check_repository_pattern(repository)


def gun_prefixes(prefixes: Iterable[str]) -> tuple[str, ...]:
    """Normalised `host[:port]/` GUN prefixes (a trailing `/` added); bad ones raise ValueError."""
    out: list[str] = []
    for prefix in prefixes:
        value = prefix.strip()
        if not value:
            continue
        value = value if value.endswith("/") else value + "/"
        if not _PREFIX_RE.match(value):
            raise ValueError(
                f"GUN prefix {prefix[:100]!r} is not host[:port]/ (for example "
                "'registry.example.com:5000/')"
            )
        out.append(value)
    return tuple(dict.fromkeys(out))


class AccessPolicy:
    """Evaluates rules; reloads them from the store at most every `ttl` seconds.

    `gun_prefixes`: GUN prefixes (`HOST:PORT/`) under which names are this registry's
    repositories; see the module docstring.
    """

    def __init__(
        self,
        load_rules: Callable[[], Awaitable[list[AclRule]]],
        *,
        ttl: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        gun_prefixes: tuple[str, ...] = (),
    ) -> None:
        self._load = load_rules
        self._ttl = ttl
        self._clock = clock
        self._rules: list[AclRule] = []
        self._loaded_at = float("-inf")
        self._ignored: set[int] = set()
        self.gun_prefixes = gun_prefixes

    async def rules(self) -> list[AclRule]:
        now = self._clock()
        if now - self._loaded_at >= self._ttl:
            self._rules = [rule for rule in await self._load() if self._usable(rule)]
            self._loaded_at = now
        return self._rules

    def _usable(self, rule: AclRule) -> bool:
        try:
            check_repository_pattern(rule.repository)
        except ValueError as exc:
            if rule.id not in self._ignored:  # once per rule, not on every reload
                self._ignored.add(rule.id)
                log.warning("acl_rule_ignored", rule=rule.id, reason=str(exc))
            return False
        return True

    async def allowed(self, principal: Principal, rtype: str, name: str) -> set[str]:
        if rtype == "registry":
            return {"*"} if principal.admin and name == "catalog" else set()
        if rtype != "repository" or not valid_repository_name(name):
            return set()
        if principal.admin:
            return set(EVERYTHING)
        rules = await self.rules()
        granted = self._granted(principal, name, rules)
        for prefix in self.gun_prefixes:
            repository = name[len(prefix) :]
            if name.startswith(prefix) and NAME_RE.match(repository):
                granted |= self._granted(principal, repository, rules)
        return granted

    @staticmethod
    def _granted(principal: Principal, name: str, rules: list[AclRule]) -> set[str]:
        granted: set[str] = set()
        if principal.kind == "user" and (
            name == principal.name or name.startswith(principal.name + "/")
        ):
            granted.update(ALL_ACTIONS)
        for rule in rules:
            if _account_matches(rule.account, principal) and _repo_matches(
                rule.repository, principal, name
            ):
                granted.update(EVERYTHING if "*" in rule.actions else rule.actions)
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
                elif action in allowed or ("*" in allowed and action in ALL_ACTIONS):
                    acts.append(action)
            if acts:
                merged = out.setdefault((scope.type, scope.name), [])
                merged.extend(a for a in acts if a not in merged)
        return [Scope(t, n, tuple(a)) for (t, n), a in out.items()]
