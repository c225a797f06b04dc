"""ACL evaluation: ${user} namespaces, anonymous pull per pattern, groups, robots, catalog,
scope escalation and path tricks."""

from __future__ import annotations

from trustyard.auth.access import AccessPolicy
from trustyard.auth.scopes import Scope, parse_scopes
from trustyard.auth.users import ANONYMOUS, Principal
from trustyard.metadata.auth_base import AclRule

ALICE = Principal("alice", "user")
BOB = Principal("bob", "user", groups=("devs",))
ADMIN = Principal("root", "user", admin=True)
ROBOT = Principal("alice+ci", "robot")

RULES = [
    AclRule(1, "anonymous", "public/*", ("pull",)),
    AclRule(2, "group:devs", "team/*", ("pull", "push")),
    AclRule(3, "alice+ci", "alice/app", ("push", "pull")),
    AclRule(4, "*", "shared/${user}/*", ("*",)),
]


def policy() -> AccessPolicy:
    async def load() -> list[AclRule]:
        return RULES

    return AccessPolicy(load)


async def granted(who: Principal, *scopes: str) -> list[str]:
    return [str(s) for s in await policy().grant(who, parse_scopes(list(scopes)))]


async def test_each_user_owns_their_namespace_only() -> None:
    assert await granted(ALICE, "repository:alice/app:pull,push,delete") == [
        "repository:alice/app:pull,push,delete"
    ]
    assert await granted(ALICE, "repository:alice:pull") == ["repository:alice:pull"]
    # Escalation: push asked on bob's namespace; nothing granted, no error.
    assert await granted(ALICE, "repository:bob/app:pull,push") == []
    assert await granted(ALICE, "repository:alicex/app:push") == []


async def test_anonymous_pull_per_pattern() -> None:
    assert await granted(ANONYMOUS, "repository:public/base:pull,push") == [
        "repository:public/base:pull"
    ]
    assert await granted(ANONYMOUS, "repository:private/x:pull") == []
    # Logged-in users get anonymous rights too.
    assert await granted(BOB, "repository:public/base:pull") == ["repository:public/base:pull"]


async def test_groups_robots_and_user_placeholder() -> None:
    assert await granted(BOB, "repository:team/api:push,delete") == ["repository:team/api:push"]
    assert await granted(ALICE, "repository:team/api:pull") == []
    assert await granted(ROBOT, "repository:alice/app:pull,push") == [
        "repository:alice/app:pull,push"
    ]
    # Robots do not own their owner's namespace.
    assert await granted(ROBOT, "repository:alice/other:pull") == []
    # A rule listing `*` grants `*` (deleting trust data) as well as each action.
    assert await granted(BOB, "repository:shared/bob/x:*") == ["repository:shared/bob/x:*"]
    assert await granted(BOB, "repository:shared/bob/x:pull,delete") == [
        "repository:shared/bob/x:pull,delete"
    ]
    assert await granted(BOB, "repository:shared/alice/x:pull") == []
    assert await granted(ANONYMOUS, "repository:shared//x:pull") == []


async def test_catalog_is_for_admins() -> None:
    assert await granted(ADMIN, "registry:catalog:*") == ["registry:catalog:*"]
    assert await granted(ALICE, "registry:catalog:*") == []
    assert await granted(ADMIN, "repository:anything/at/all:delete") == [
        "repository:anything/at/all:delete"
    ]


async def test_path_tricks_in_scope_names_grant_nothing() -> None:
    for name in [
        "alice/../bob/app",
        "alice/./app",
        "alice//app",
        "alice/%2e%2e/bob",
        "Alice/app",
        "alice/app/",
        "/alice/app",
        "alice/" + "a" * 300,
    ]:
        assert await granted(ALICE, f"repository:{name}:pull") == [], name
        assert await granted(ADMIN, f"repository:{name}:pull") == [], name


async def test_unknown_types_and_actions_are_dropped() -> None:
    assert await granted(ADMIN, "repository:a/b:frobnicate") == []
    assert await granted(ADMIN, "plugin:x:pull") == []
    scopes = await policy().grant(ALICE, [Scope("repository", "alice/a", ("pull",))] * 2)
    assert [str(s) for s in scopes] == ["repository:alice/a:pull"]


async def test_rules_are_reloaded_after_the_ttl_not_before() -> None:
    """A rule added to the store counts once `ttl` has passed on the policy's clock."""
    rules = [RULES[0]]
    loads = 0
    now = 100.0

    async def load() -> list[AclRule]:
        nonlocal loads
        loads += 1
        return list(rules)

    acl = AccessPolicy(load, ttl=5.0, clock=lambda: now)
    assert await acl.allowed(ROBOT, "repository", "alice/app") == set()
    rules.append(RULES[2])
    now += 4.9
    assert await acl.allowed(ROBOT, "repository", "alice/app") == set()
    now += 0.1
    assert await acl.allowed(ROBOT, "repository", "alice/app") == {"push", "pull"}
    assert loads == 2
