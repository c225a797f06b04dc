"""Docker token scopes: `type[(class)]:name:action[,action]` (names may contain `host:port`).

The type ends at the first ':', the actions start after the last one (as Harbor's
`GetResourceActions` does), so `repository:localhost:5000/app:pull` parses. Repository names are
checked against the distribution grammar: a name with `..`, `%2e`, uppercase or an empty
component is never granted anything.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.routing import Route

from trustyard.oci.reference import MAX_NAME_LENGTH, NAME_RE

ACTIONS = ("pull", "push", "delete", "*")
_TYPE_RE = re.compile(r"^([a-z0-9]+)(?:\([a-z0-9]+\))?$")
MAX_SCOPES = 64


class ScopeError(ValueError):
    """A scope string that does not follow the grammar."""


@dataclass(frozen=True, slots=True)
class Scope:
    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def access(self) -> dict[str, object]:
        """The token's `access` claim entry."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scope(text: str) -> Scope:
    first = text.find(":")
    last = text.rfind(":")
    if first <= 0 or last == first:
        raise ScopeError(f"scope {text[:200]!r} is not type:name:actions")
    rtype, name, actions = text[:first], text[first + 1 : last], text[last + 1 :]
    m = _TYPE_RE.match(rtype)
    if m is None:
        raise ScopeError(f"scope {text[:200]!r} has an invalid resource type {rtype[:50]!r}")
    if not name:
        raise ScopeError(f"scope {text[:200]!r} has an empty resource name")
    acts = tuple(dict.fromkeys(a for a in actions.split(",") if a))
    return Scope(m.group(1), name, acts)


def parse_scopes(values: list[str]) -> list[Scope]:
    """Scopes from repeated `scope` parameters, each possibly space-separated (OAuth2 form).

    Malformed scopes are dropped (the spec says grant what can be granted, never fail).
    """
    out: list[Scope] = []
    for value in values:
        for part in value.split():
            try:
                out.append(parse_scope(part))
            except ScopeError:
                continue
            if len(out) >= MAX_SCOPES:
                return out
    return out


# A registry host (with an optional port) may lead a name: Notary GUNs and `docker trust` use
# `host[:port]/repository`, and their tokens are scoped to that full name.
_DOMAIN_RE = re.compile(
    r"^(?:localhost|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?\Z"
)


def valid_repository_name(name: str) -> bool:
    if len(name) > MAX_NAME_LENGTH:
        return False
    if NAME_RE.match(name) is not None:
        return True
    domain, _, rest = name.partition("/")
    looks_like_host = "." in domain or ":" in domain or domain == "localhost"
    return (
        looks_like_host
        and bool(rest)
        and _DOMAIN_RE.match(domain) is not None
        and NAME_RE.match(rest) is not None
    )


def covers(granted: Collection[str], action: str) -> bool:
    return action in granted or "*" in granted


def format_scope_param(scopes: list[Scope]) -> str:
    return " ".join(str(s) for s in scopes)


CATALOG = Scope("registry", "catalog", ("*",))


@dataclass(frozen=True, slots=True)
class Rights:
    """What a route needs, declared once on the route (`GuardedRoute`) and read by the access
    check, so the check and the handler can never disagree about which route a request is.

    `actions` on the repository named by path parameter `param`; `catalog`: the registry
    catalog (`registry:catalog:*`); neither: any valid identity. `mounts`: the route reads
    `mount`/`from`, whose source repository the access check must approve as well.
    """

    actions: tuple[str, ...] = ()
    param: str | None = None
    catalog: bool = False
    mounts: bool = False

    def scopes(self, path_params: Mapping[str, Any]) -> list[Scope]:
        if self.catalog:
            return [CATALOG]
        if self.param is None:
            return []
        return [Scope("repository", str(path_params[self.param]), self.actions)]

    def describe(self) -> str:
        """For docs and logs: `repository:<name>:pull,push`, `registry:catalog:*`, `identity`."""
        if self.catalog:
            return str(CATALOG)
        if self.param is None:
            return "any valid identity"
        return f"repository:<{self.param}>:{','.join(self.actions)}"


IDENTITY = Rights()
CATALOG_RIGHTS = Rights(catalog=True)


def on_repository(*actions: str, param: str = "name", mounts: bool = False) -> Rights:
    return Rights(tuple(actions), param, mounts=mounts)


class GuardedRoute(Route):
    """A Starlette route that carries the rights it needs (see `Rights`)."""

    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, methods: list[str], rights: Rights
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.rights = rights
