"""Signature identities (`docker-reference`) against the pulled repository, as containers/image's
`signedIdentity` rules decide them (matchRepoDigestOrExact, matchRepository, matchExact)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustyard.registry.policy import PolicyConfigError
from trustyard.registry.signed_identity import (
    DockerReference,
    IdentityRule,
    parse_docker_reference,
)

D = "sha256:" + "a" * 64
E = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reg.example/team/app:v1", DockerReference("reg.example", "team/app", "v1", None)),
        ("127.0.0.1:5000/team/app", DockerReference("127.0.0.1:5000", "team/app", None, None)),
        ("localhost/app@" + D, DockerReference("localhost", "app", None, D)),
        ("reg:5000/a/b:t@" + D, DockerReference("reg:5000", "a/b", "t", D)),
        ("team/app:v1", DockerReference("docker.io", "team/app", "v1", None)),
        ("busybox", DockerReference("docker.io", "library/busybox", None, None)),
        ("index.docker.io/busybox", DockerReference("docker.io", "library/busybox", None, None)),
    ],
)
def test_references_are_normalized_as_docker_does(text: str, expected: DockerReference) -> None:
    assert parse_docker_reference(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "Team/App", "reg.example/team/app:", "reg.example//app", "a@sha256:zz", "reg.example/../x",
     "reg.example/app:" + "t" * 200, "x" * 600, "bad_domain!/app"],
)  # fmt: skip
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_docker_reference(text)


@given(st.text(max_size=300))
def test_parser_never_fails_otherwise(text: str) -> None:
    try:
        parse_docker_reference(text)
    except ValueError:
        pass


CASES = [
    # (match, signature reference, pulled tag or None for by-digest, allowed)
    ("repo-digest-or-exact", "r.example/team/app:v1", "v1", True),
    ("repo-digest-or-exact", "r.example/team/app:v1", "v2", False),
    ("repo-digest-or-exact", "r.example/team/app:v1", None, True),
    ("repo-digest-or-exact", "r.example/team/app", "v1", False),  # name only
    ("repo-digest-or-exact", "r.example/team/app", None, False),
    ("repo-digest-or-exact", "r.example/team/other:v1", "v1", False),
    ("repo-digest-or-exact", "r.example/team/other:v1", None, False),
    ("repo-digest-or-exact", f"r.example/team/app@{D}", "v1", False),
    ("repository", "r.example/team/app", "v1", True),
    ("repository", "r.example/team/app:v9", None, True),
    ("repository", "r.example/team/other", "v1", False),
    ("repository", "r.example/team/app/sub", "v1", False),
    ("exact", "r.example/team/app:v1", "v1", True),
    ("exact", "r.example/team/app:v1", None, False),
    ("exact", f"r.example/team/app@{D}", None, True),
    ("exact", f"r.example/team/app@{E}", None, False),
    ("exact", "r.example/team/app", "v1", False),
    ("digest-only", "anything at all", "v1", True),
    ("digest-only", "r.example/team/other", None, True),
]


@pytest.mark.parametrize(("match", "reference", "tag", "allowed"), CASES)
def test_match_modes(match: str, reference: str, tag: str | None, allowed: bool) -> None:
    rule = IdentityRule(match)
    assert (rule.mismatch(reference, "team/app", tag, D) is None) is allowed


def test_hosts_pin_the_registry_name() -> None:
    rule = IdentityRule("repository", ("r.example", "127.0.0.1:5000"))
    assert rule.mismatch("r.example/team/app", "team/app", "v1", D) is None
    assert rule.mismatch("127.0.0.1:5000/team/app", "team/app", "v1", D) is None
    why = rule.mismatch("evil.example/team/app", "team/app", "v1", D)
    assert why is not None and "names registry evil.example" in why
    why = IdentityRule("repository").mismatch("not a ref!", "team/app", "v1", D)
    assert why is not None and "is not an image reference" in why


def test_bad_options_are_refused() -> None:
    with pytest.raises(PolicyConfigError, match="match must be one of"):
        IdentityRule.from_spec({"match": "matchExact"}, "cosign", "repository")
    with pytest.raises(PolicyConfigError, match="hosts must be a list"):
        IdentityRule.from_spec({"hosts": [1]}, "cosign", "repository")
    assert IdentityRule.from_spec({}, "cosign", "repository") == IdentityRule("repository")
