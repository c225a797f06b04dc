"""The one identity mapping verified admission adds: a mirrored repository's upstream name.

Pure: `MirrorNames` / `identity_aliases` (registry/mirror_admission.py), `IdentityRule.mismatch_any`
and `PolicyContext.identity_names`; a repository outside every mirror prefix gets no alias.
"""

from __future__ import annotations

import pytest

from trustyard.registry.mirror_admission import MirrorNames, identity_aliases
from trustyard.registry.policy import PolicyContext
from trustyard.registry.signed_identity import IdentityRule

D = "sha256:" + "a" * 64


async def _none(*_: object) -> None:
    return None


def test_aliases_only_under_a_mirror_prefix() -> None:
    aliases = identity_aliases([MirrorNames("hub", "library"), MirrorNames("q", "")])
    assert aliases("hub/alpine") == ("library/alpine",)
    assert aliases("hub/team/app") == ("library/team/app",)
    assert aliases("q/team/app") == ("team/app",)
    assert aliases("hubx/alpine") == ()  # a prefix is a whole path component
    assert aliases("team/app") == ()
    assert identity_aliases([MirrorNames("same", "")])("same/same") == ("same",)
    assert identity_aliases([MirrorNames("a", "a")])("a/x") == ()  # identical: no alias


def test_identity_names_without_and_with_mirrors() -> None:
    ctx = PolicyContext(_none, _none)
    assert ctx.identity_names("hub/alpine") == ("hub/alpine",)
    ctx.identity_aliases = identity_aliases([MirrorNames("hub", "library")])
    assert ctx.identity_names("hub/alpine") == ("hub/alpine", "library/alpine")
    assert ctx.identity_names("team/app") == ("team/app",)


@pytest.mark.parametrize("match", ["repository", "repo-digest-or-exact", "exact"])
def test_mismatch_any_accepts_the_upstream_name_and_keeps_the_match_mode(match: str) -> None:
    rule = IdentityRule(match)
    names = ("hub/alpine", "library/alpine")
    assert rule.mismatch_any("up.example/library/alpine:3", names, "3", D) is None
    assert rule.mismatch_any("up.example/hub/alpine:3", names, "3", D) is None
    wrong = rule.mismatch_any("up.example/library/other:3", names, "3", D)
    assert wrong is not None and "names repository library/other, not hub/alpine" in wrong
    if match != "repository":  # the tag still has to match
        moved = rule.mismatch_any("up.example/library/alpine:4", names, "3", D)
        assert moved is not None and "is not exactly" in moved


def test_hosts_still_apply_to_upstream_identities() -> None:
    rule = IdentityRule("repository", ("reg.example",))
    wrong = rule.mismatch_any(
        "up.example/library/alpine", ("hub/alpine", "library/alpine"), None, D
    )
    assert wrong is not None and "names registry up.example" in wrong
    allowed = IdentityRule("repository", ("up.example",))
    names = ("hub/alpine", "library/alpine")
    assert allowed.mismatch_any("up.example/library/alpine", names, None, D) is None
