"""`index_platforms`: which children of a pushed index must already exist (pure rules)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustyard.oci.platforms import ALL_PLATFORMS, IndexPlatforms, Platform

AMD64 = {"os": "linux", "architecture": "amd64"}
ARM64_V8 = {"os": "linux", "architecture": "arm64", "variant": "v8"}


def test_all_and_none() -> None:
    assert ALL_PLATFORMS.must_exist(AMD64) and ALL_PLATFORMS.must_exist(None)
    none = IndexPlatforms.parse("none")
    assert not none.must_exist(AMD64) and not none.must_exist(None)


def test_list_matches_os_arch_and_optional_variant() -> None:
    rule = IndexPlatforms.parse("linux/amd64, linux/arm64/v8")
    assert rule.must_exist(AMD64)
    assert rule.must_exist({**AMD64, "variant": "v3"})  # no variant listed: any variant
    assert rule.must_exist(ARM64_V8)
    assert not rule.must_exist({"os": "linux", "architecture": "arm64", "variant": "v9"})
    assert not rule.must_exist({"os": "windows", "architecture": "amd64"})
    assert rule.must_exist(None) and rule.must_exist({})  # no platform: must exist
    assert str(rule) == "linux/amd64,linux/arm64/v8"


@pytest.mark.parametrize("bad", ["linux", "a/b/c/d", "Linux/AMD 64", ",", "/amd64", "linux/"])
def test_bad_values_say_what_to_write(bad: str) -> None:
    with pytest.raises(ValueError, match="os/arch"):
        IndexPlatforms.parse(bad)


@given(st.text(max_size=40))
def test_parse_never_fails_other_than_value_error(text: str) -> None:
    try:
        rule = IndexPlatforms.parse(text)
    except ValueError:
        return
    assert IndexPlatforms.parse(str(rule)) == rule  # the normal form reads back the same


def test_platform_round_trip() -> None:
    assert str(Platform.parse("linux/arm/v7")) == "linux/arm/v7"
