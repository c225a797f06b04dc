"""Scope grammar: host:port names, classes, many scopes, malformed input dropped."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustyard.auth.scopes import Scope, ScopeError, parse_scope, parse_scopes


def test_name_with_host_and_port() -> None:
    s = parse_scope("repository:localhost:5000/team/app:pull,push")
    assert s == Scope("repository", "localhost:5000/team/app", ("pull", "push"))
    assert str(s) == "repository:localhost:5000/team/app:pull,push"


def test_class_is_ignored_and_catalog_parses() -> None:
    assert parse_scope("repository(plugin):a/b:pull") == Scope("repository", "a/b", ("pull",))
    assert parse_scope("registry:catalog:*") == Scope("registry", "catalog", ("*",))


def test_duplicate_actions_collapse() -> None:
    assert parse_scope("repository:a:pull,pull,,push").actions == ("pull", "push")


@pytest.mark.parametrize("bad", ["", "repository", "repository:a", "Repo:a:pull", "x::pull"])
def test_malformed(bad: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(bad)


def test_many_scopes_space_and_repeat_and_bad_ones_dropped() -> None:
    got = parse_scopes(["repository:a:pull repository:b:push", "junk", "registry:catalog:*"])
    assert [str(s) for s in got] == [
        "repository:a:pull",
        "repository:b:push",
        "registry:catalog:*",
    ]


def test_scope_count_is_bounded() -> None:
    assert len(parse_scopes([f"repository:r{i}:pull" for i in range(1000)])) == 64


@given(st.text(max_size=300))
def test_parser_never_crashes(text: str) -> None:
    try:
        s = parse_scope(text)
    except ScopeError:
        return
    assert s.type and s.name


def test_names_may_carry_a_registry_host() -> None:
    """Notary GUNs (`host:port/repo`) get tokens too; traversal and bare hosts never."""
    from trustyard.auth.scopes import valid_repository_name

    assert valid_repository_name("127.0.0.1:5000/alice/app")
    assert valid_repository_name("registry.example.com/team/app")
    assert valid_repository_name("localhost/app")
    for bad in (
        "127.0.0.1:5000",
        "127.0.0.1:5000/../x",
        "a:b/c",
        "host.com/UP",
        "../x",
        "-x.com/app",
    ):
        assert not valid_repository_name(bad), bad
    scope = parse_scope("repository:127.0.0.1:5000/alice/app:pull,push")
    assert scope.name == "127.0.0.1:5000/alice/app" and scope.actions == ("pull", "push")
