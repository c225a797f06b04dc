"""Rule matching: `${user}` reaches only the caller's own subtree, rules that could reach
further are refused (and ignored when found in the store), ownership follows a repository into
its GUN under the configured prefixes and no further, and `*` is granted to admins and by rules
that list it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustyard.auth.access import (
    AccessPolicy,
    _repo_matches,
    check_repository_pattern,
    gun_prefixes,
    validate_rule,
)
from trustyard.auth.scopes import parse_scopes
from trustyard.auth.users import ANONYMOUS, Principal, validate_account_name
from trustyard.config import Settings, load_settings
from trustyard.metadata.auth_base import AclRule
from trustyard.wiring.auth import gun_prefixes_of

ALICE = Principal("alice", "user")
ALICE_X = Principal("alice-x", "user")
ADMIN = Principal("root", "user", admin=True)
PREFIX = "127.0.0.1:5000/"


def policy(*rules: AclRule, prefixes: tuple[str, ...] = ()) -> AccessPolicy:
    async def load() -> list[AclRule]:
        return list(rules)

    return AccessPolicy(load, gun_prefixes=prefixes)


async def granted(p: AccessPolicy, who: Principal, *scopes: str) -> list[str]:
    return [str(s) for s in await p.grant(who, parse_scopes(list(scopes)))]


# -- what `admin acl add` accepts ---------------------------------------------------------------
@pytest.mark.parametrize(
    "pattern",
    [
        "${user}",
        "${user}/*",
        "shared/${user}",
        "shared/${user}/*",
        "teams/blue/${user}/app-*",
        "public/*",
        "*",
    ],
)
def test_safe_patterns_are_accepted(pattern: str) -> None:
    validate_rule("*", pattern, ("pull",))


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("shared/${user}-*", "whole path component"),  # the documented rule of old
        ("shared/*-${user}", "whole path component"),
        ("shared/${user}*", "whole path component"),
        ("shared/${user}?", "whole path component"),
        ("${user}.dev/*", "whole path component"),
        ("*/${user}/*", "literal names"),
        ("sh?red/${user}", "literal names"),
        ("[a-z]/${user}", "literal names"),
        ("/${user}", "literal names"),
        ("${user}/${user}", "only once"),
        ("${USER}/*", "only placeholder"),
        ("${account}/*", "only placeholder"),
        ("${group}/${user}/*", "only placeholder"),
        ("${user}/${account}", "only placeholder"),
    ],
)
def test_patterns_that_could_reach_other_users_are_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_rule("*", pattern, ("pull",))


def test_refusal_says_what_to_write_instead() -> None:
    with pytest.raises(ValueError) as info:
        check_repository_pattern("shared/${user}-*")
    assert "'shared/${user}/*'" in str(info.value) and "alice-x" in str(info.value)


# -- the attack: alice on alice-x's repositories -----------------------------------------------
async def test_stored_glued_rule_no_longer_reaches_another_users_repository() -> None:
    """A rule stored before the refusal existed (the old documented example) matches nothing."""
    p = policy(AclRule(1, "*", "shared/${user}-*", ("*",)))
    for scope in ["shared/alice-x-secret", "shared/alice-x", "shared/alice-"]:
        assert await granted(p, ALICE, f"repository:{scope}:pull,push,delete") == [], scope
    assert await p.rules() == []


async def test_user_component_rule_stays_in_the_callers_subtree() -> None:
    p = policy(AclRule(1, "*", "shared/${user}/*", ("pull", "push")))
    assert await granted(p, ALICE, "repository:shared/alice/app:pull,push") == [
        "repository:shared/alice/app:pull,push"
    ]
    assert await granted(p, ALICE, "repository:shared/alice/a/b:push") == [
        "repository:shared/alice/a/b:push"
    ]
    for name in [
        "shared/alice-x/app",
        "shared/alicex/app",
        "shared/alice",  # the pattern names what is below, not the component itself
        "shared/bob/alice/app",
        "other/alice/app",
        "alice-x/app",
    ]:
        assert await granted(p, ALICE, f"repository:{name}:pull") == [], name
    assert await granted(p, ALICE_X, "repository:shared/alice-x/app:pull") == [
        "repository:shared/alice-x/app:pull"
    ]
    assert await granted(p, ANONYMOUS, "repository:shared/alice/app:pull") == []


async def test_user_exact_and_glob_tail() -> None:
    p = policy(
        AclRule(1, "*", "home/${user}", ("pull",)),
        AclRule(2, "*", "ci/${user}/app-*", ("push",)),
    )
    assert await granted(p, ALICE, "repository:home/alice:pull") == ["repository:home/alice:pull"]
    assert await granted(p, ALICE, "repository:home/alice/x:pull") == []
    assert await granted(p, ALICE, "repository:ci/alice/app-1:push") == [
        "repository:ci/alice/app-1:push"
    ]
    assert await granted(p, ALICE, "repository:ci/alice/lib:push") == []
    assert await granted(p, ALICE, "repository:ci/alice-x/app-1:push") == []


# A small alphabet, so that users, other users and glob tails often collide.
_component = st.builds(
    lambda a, sep, b: a + (sep + b if b else ""),
    st.text("ab0", min_size=1, max_size=4),
    st.sampled_from("._-"),
    st.text("ab0", max_size=3),
)
_literal_head = st.lists(_component, max_size=2).map(lambda parts: "".join(p + "/" for p in parts))
_tail = st.sampled_from(["", "/*", "/app-*", "/*/x", "/?", "/[a-c]*"])


@settings(max_examples=200, deadline=None)
@given(
    head=_literal_head,
    tail=_tail,
    user=_component,
    other=_component,
    suffix=st.sampled_from(["", "-a", "a", ".a", "_0", "/a", "-a/b", "/app-1", "/a/b"]),
)
def test_user_placeholder_never_reaches_another_users_subtree(
    head: str, tail: str, user: str, other: str, suffix: str
) -> None:
    """Whatever accepted pattern, a name matches for `user` only inside `head + user`."""
    pattern = head + "${user}" + tail
    check_repository_pattern(pattern)
    validate_account_name(user)
    name = head + other + suffix
    if not _repo_matches(pattern, Principal(user, "user"), name):
        return
    own = head + user
    assert name == own or name.startswith(own + "/"), (pattern, user, name)


@settings(max_examples=200, deadline=None)
@given(
    head=st.text(alphabet="ab/-*?[]", max_size=6),
    glued=st.sampled_from(["-*", "*", "x", ".", "-", "?"]),
    before=st.booleans(),
)
def test_every_glued_placeholder_is_refused(head: str, glued: str, before: bool) -> None:
    pattern = head + (glued + "${user}" if before else "${user}" + glued)
    with pytest.raises(ValueError):
        check_repository_pattern(pattern)


# -- admins and `*` -----------------------------------------------------------------------------
async def test_admin_and_star_rules_get_star() -> None:
    p = policy(AclRule(1, "group:ops", "prod/*", ("*",)), AclRule(2, "bob", "prod/*", ("push",)))
    ops = Principal("carol", "user", groups=("ops",))
    bob = Principal("bob", "user")
    assert await granted(p, ADMIN, "repository:any/thing:*") == ["repository:any/thing:*"]
    assert await granted(p, ADMIN, f"repository:{PREFIX}any/thing:*") == [
        f"repository:{PREFIX}any/thing:*"
    ]
    assert await granted(p, ops, "repository:prod/app:*") == ["repository:prod/app:*"]
    # Without `*` in a rule, asking for `*` gets the listed actions only (no trust delete).
    assert await granted(p, bob, "repository:prod/app:*") == ["repository:prod/app:push"]
    assert await granted(p, ALICE, "repository:alice/app:*") == [
        "repository:alice/app:pull,push,delete"
    ]
    # `*` never stands for actions nobody defined.
    assert await granted(p, ADMIN, "repository:a/b:frobnicate") == []


# -- GUN prefixes -------------------------------------------------------------------------------
async def test_ownership_follows_the_repository_into_its_gun() -> None:
    p = policy(AclRule(1, "anonymous", "public/*", ("pull",)), prefixes=(PREFIX,))
    assert await granted(p, ALICE, f"repository:{PREFIX}alice/app:pull,push") == [
        f"repository:{PREFIX}alice/app:pull,push"
    ]
    assert await granted(p, ALICE, f"repository:{PREFIX}alice:pull") == [
        f"repository:{PREFIX}alice:pull"
    ]
    assert await granted(p, ANONYMOUS, f"repository:{PREFIX}public/base:pull,push") == [
        f"repository:{PREFIX}public/base:pull"
    ]
    for name in [
        f"{PREFIX}alice-x/app",  # another user's namespace
        f"{PREFIX}alicex",
        f"{PREFIX}bob/app",
        "otherhost:1/alice/x",  # not this registry's prefix
        "127.0.0.1:50001/alice/x",
        "127.0.0.2:5000/alice/x",
        "localhost:5000/alice/x",
        f"{PREFIX}otherhost:1/alice/x",  # a second host after the prefix
        f"{PREFIX}127.0.0.1:5000/alice/x",
    ]:
        assert await granted(p, ALICE, f"repository:{name}:pull") == [], name
    # Not configured: no GUN at all.
    assert await granted(policy(), ALICE, f"repository:{PREFIX}alice/app:pull") == []


async def test_another_configured_prefix_is_honoured() -> None:
    p = policy(prefixes=("registry.example.com/", "otherhost:1/"))
    assert await granted(p, ALICE, "repository:otherhost:1/alice/x:push") == [
        "repository:otherhost:1/alice/x:push"
    ]
    assert await granted(p, ALICE, "repository:registry.example.com/alice/x:pull") == [
        "repository:registry.example.com/alice/x:pull"
    ]
    assert await granted(p, ALICE, f"repository:{PREFIX}alice/x:pull") == []


def test_gun_prefixes_are_normalised_and_checked() -> None:
    assert gun_prefixes(["reg.example:5000", "reg.example:5000/", " other/ ", ""]) == (
        "reg.example:5000/",
        "other/",
    )
    for bad in ["http://reg/", "reg:port/", "reg/../x/", "*/", "reg:5000//"]:
        with pytest.raises(ValueError, match="host\\[:port\\]/"):
            gun_prefixes([bad])


def test_default_gun_prefix_is_this_servers_address(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gun_prefixes_of(Settings(host="127.0.0.1", port=5000)) == ("127.0.0.1:5000/",)
    assert gun_prefixes_of(Settings(host="registry.local", port=443)) == ("registry.local:443/",)
    # A wildcard or IPv6 address is not what clients write: nothing is assumed.
    for host in ("0.0.0.0", "::", "::1", ""):
        assert gun_prefixes_of(Settings(host=host, port=5000)) == (), host
    configured = Settings(
        host="0.0.0.0", trust={"gun_prefixes": ["reg.example", "reg.example:5000/"]}
    )
    assert gun_prefixes_of(configured) == ("reg.example/", "reg.example:5000/")
    assert gun_prefixes_of(Settings(trust={"gun_prefixes": []})) == ()
    monkeypatch.setenv("TRUSTYARD_TRUST__GUN_PREFIXES", "reg.example:5000, other.example/")
    assert gun_prefixes_of(load_settings()) == ("reg.example:5000/", "other.example/")
    with pytest.raises(ValueError, match="host\\[:port\\]/"):
        gun_prefixes_of(Settings(trust={"gun_prefixes": ["https://reg.example/"]}))
