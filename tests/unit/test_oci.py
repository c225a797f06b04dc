"""Pure OCI domain: digest and name grammar, manifest parsing."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest, Digester
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.manifest import parse_manifest
from trustyard.oci.reference import is_valid_tag, validate_name

HEX = "a" * 64


def test_digest_roundtrip() -> None:
    d = Digest.parse(f"sha256:{HEX}")
    assert str(d) == f"sha256:{HEX}"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256",
        "sha256:",
        f"sha256:{HEX[:-1]}",
        f"sha256:{HEX.upper()}",
        f"md5:{HEX}",
        f"sha256:{HEX}/../x",
        "sha256:../../etc",
    ],
)
def test_invalid_digests(text: str) -> None:
    with pytest.raises(RegistryError) as err:
        Digest.parse(text)
    assert err.value.code is ErrorCode.DIGEST_INVALID


def test_digester_matches_hashlib_and_copy_rolls_back() -> None:
    d = Digester()
    d.update(b"hello ")
    snapshot = d.copy()
    d.update(b"world")
    assert d.digest() == Digest.of(b"hello world")
    assert snapshot.digest() == Digest.of(b"hello ")
    assert d.size == 11


def test_sha512_supported() -> None:
    d = Digest.of(b"x", "sha512")
    assert Digest.parse(str(d)) == d


@given(st.text(max_size=300))
def test_digest_parse_never_crashes(text: str) -> None:
    try:
        d = Digest.parse(text)
    except RegistryError as exc:
        assert exc.code is ErrorCode.DIGEST_INVALID
    else:
        assert "/" not in d.hex and "." not in d.hex


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a-b/c_d/e.f", "a__b", "x/y/z/w"])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "A",
        "..",
        "a/..",
        "/abs",
        "a//b",
        "a/",
        "-a",
        "a..b",
        "../../etc/passwd",
        "a" * 256,
        "a\x00b",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(RegistryError) as err:
        validate_name(name)
    assert err.value.code is ErrorCode.NAME_INVALID


@given(st.text(max_size=300))
def test_name_validation_never_allows_traversal(text: str) -> None:
    try:
        validate_name(text)
    except RegistryError:
        return
    assert ".." not in text.split("/") and not text.startswith("/") and len(text) <= 255


def test_tags() -> None:
    assert is_valid_tag("latest") and is_valid_tag("v1.0_rc-1") and is_valid_tag("a" * 128)
    assert (
        not is_valid_tag("")
        and not is_valid_tag(".x")
        and not is_valid_tag("-x")
        and not is_valid_tag("a" * 129)
    )


def _manifest(**extra: object) -> bytes:
    body = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": f"sha256:{HEX}",
            "size": 2,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": f"sha256:{'b' * 64}",
                "size": 3,
            }
        ],
    }
    body.update(extra)
    return json.dumps(body).encode()


def test_parse_image_manifest() -> None:
    m = parse_manifest(_manifest(), mt.OCI_MANIFEST)
    assert m.media_type == mt.OCI_MANIFEST
    assert [str(b.digest) for b in m.blobs] == [f"sha256:{HEX}", f"sha256:{'b' * 64}"]
    assert m.artifact_type == "application/vnd.oci.image.config.v1+json"
    assert m.subject is None


def test_subject_and_artifact_type() -> None:
    subject = {"mediaType": mt.OCI_MANIFEST, "digest": f"sha256:{'c' * 64}", "size": 10}
    m = parse_manifest(_manifest(subject=subject, artifactType="application/x-sig"), None)
    assert str(m.subject) == f"sha256:{'c' * 64}"
    assert m.artifact_type == "application/x-sig"


def test_schema1_refused_with_clear_message() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode()
    with pytest.raises(RegistryError) as err:
        parse_manifest(body, mt.DOCKER_SCHEMA1_SIGNED)
    assert err.value.code is ErrorCode.MANIFEST_INVALID
    assert "schema 1" in err.value.message


def test_content_type_mismatch() -> None:
    with pytest.raises(RegistryError) as err:
        parse_manifest(_manifest(), mt.DOCKER_MANIFEST)
    assert "does not match" in err.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion": 2}',
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"}',
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"digest":"sha256:zz"}}',
    ],
)
def test_malformed_manifests(body: bytes) -> None:
    with pytest.raises(RegistryError) as err:
        parse_manifest(body, None)
    assert err.value.code is ErrorCode.MANIFEST_INVALID


@given(st.binary(max_size=500))
def test_manifest_parser_only_raises_registry_errors(data: bytes) -> None:
    try:
        parse_manifest(data, mt.OCI_MANIFEST)
    except RegistryError as exc:
        assert exc.code in (ErrorCode.MANIFEST_INVALID, ErrorCode.DIGEST_INVALID)
