"""Manifest references: what a lookup (GET/HEAD/DELETE) and a PUT make of any text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.service import lookup_reference, parse_reference


@given(st.text(max_size=300))
def test_a_lookup_of_any_text_is_a_reference_or_manifest_unknown(text: str) -> None:
    try:
        ref = lookup_reference("repo", text)
    except RegistryError as exc:
        assert exc.code is ErrorCode.MANIFEST_UNKNOWN and exc.status == 404
        assert "is not in repository repo" in exc.message
        assert len(exc.message) < 600  # a hostile reference is not echoed back in full
        return
    assert ref == text or (isinstance(ref, Digest) and str(ref) == text)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (".INVALID_MANIFEST_first", ErrorCode.MANIFEST_INVALID),
        ("a" * 129, ErrorCode.MANIFEST_INVALID),
        ("sha256:xyz", ErrorCode.DIGEST_INVALID),
    ],
)
def test_a_put_of_an_invalid_reference_stays_400(text: str, code: ErrorCode) -> None:
    with pytest.raises(RegistryError) as err:
        parse_reference(text)
    assert err.value.code is code and err.value.status == 400
    with pytest.raises(RegistryError) as lookup:
        lookup_reference("repo", text)
    assert lookup.value.code is ErrorCode.MANIFEST_UNKNOWN
