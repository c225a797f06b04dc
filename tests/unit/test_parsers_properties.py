"""Property tests for every parser fed from the network: a value or the parser's typed error,
never another exception (which the server would turn into a 500).

Inputs are both arbitrary (text, bytes, JSON) and near-valid (documents built from the right
keys with some values swapped for junk), so the checks deep inside each parser are reached.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from trustyard.auth.scopes import Scope, ScopeError, parse_scope, parse_scopes
from trustyard.auth.scopes import valid_repository_name as valid_scope_name
from trustyard.http.responses import _single_range
from trustyard.oci import jsonbounds
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.manifest import Manifest, parse_manifest
from trustyard.oci.reference import is_valid_tag, validate_name, validate_tag
from trustyard.registry.uploads import parse_content_range, parse_length
from trustyard.signing import cosign, simplesign
from trustyard.signing.errors import SigningError
from trustyard.trust import model as m

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# The distribution spec's grammar, written independently of the code under test.
SPEC_NAME = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")
SPEC_TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
SPEC_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")

# -- strategies ---------------------------------------------------------------------------------
NASTY_TEXT = st.sampled_from(
    ["", "\n", "a\n", "\x00", "..", "/", "a//b", "é", "٣", "²", "1_0", " 1", "+1", "-1", "9" * 5000]
)
# Built by hand: st.from_regex is ~0.2 s an example on these patterns.
_alnum = st.text("abz019", min_size=1, max_size=4)
_component = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    _alnum,
    st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _alnum), max_size=2),
)
spec_names = st.lists(_component, min_size=1, max_size=3).map("/".join)
spec_tags = st.builds(
    lambda a, b: a + b, st.text("aZ9_", min_size=1, max_size=1), st.text("aZ9_.-", max_size=127)
)
spec_digests = st.one_of(
    st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h),
    st.text("0123456789abcdef", min_size=128, max_size=128).map(lambda h: "sha512:" + h),
)
texts = st.text(max_size=300) | NASTY_TEXT | spec_names
digests_text = (
    spec_digests
    | st.builds(
        lambda a, h: f"{a}:{h}",
        st.sampled_from(["sha256", "sha512", "md5", "SHA256"]),
        st.text("0123456789abcdefABCDEF\n", max_size=130),
    )
    | texts
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)


def json_values(keys: st.SearchStrategy[str] = st.text(max_size=12)) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
        max_leaves=20,
    )


junk = json_values()


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right value, sometimes anything."""
    return st.one_of(valid, valid, valid, junk)


def documents(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of `fields` (values via `maybe`) and sometimes an extra key."""
    return st.fixed_dictionaries({}, optional={k: maybe(v) for k, v in fields.items()}).flatmap(
        lambda d: st.dictionaries(st.text(max_size=8), junk, max_size=1).map(lambda e: {**e, **d})
    )


def encoded(docs: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return docs.map(lambda d: json.dumps(d).encode()) | st.binary(max_size=200)


b64 = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())

descriptor = documents(
    {
        "mediaType": st.sampled_from([*sorted(mt.MANIFESTS), mt.OCI_MANIFEST, "x/y"]),
        "digest": digests_text,
        "size": st.integers(min_value=-2, max_value=2**64),
        "annotations": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
        "artifactType": st.text(max_size=10),
        "platform": st.dictionaries(st.text(max_size=5), junk, max_size=2),
    }
)
manifest_docs = documents(
    {
        "schemaVersion": st.sampled_from([2, 1, "2", 2.0]),
        "mediaType": st.sampled_from([*sorted(mt.MANIFESTS), "application/json", "x"]),
        "config": descriptor,
        "layers": st.lists(descriptor, max_size=3),
        "manifests": st.lists(descriptor, max_size=3),
        "subject": descriptor,
        "artifactType": st.text(max_size=10),
        "annotations": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
    }
)


# -- repository names, tags, digests -------------------------------------------------------------
@PROPS
@given(texts)
@example("app\n")
@example("a" * 256)
def test_repository_names(name: str) -> None:
    try:
        assert validate_name(name) == name
    except RegistryError as exc:
        assert exc.code is ErrorCode.NAME_INVALID and exc.message
        assert not (SPEC_NAME.fullmatch(name) and len(name) <= 255)
    else:
        assert SPEC_NAME.fullmatch(name) and len(name) <= 255, repr(name)


@PROPS
@given(texts | spec_tags)
@example("latest\n")
def test_tags(tag: str) -> None:
    assert is_valid_tag(tag) == bool(SPEC_TAG.fullmatch(tag)), repr(tag)
    try:
        assert validate_tag(tag) == tag
    except RegistryError as exc:
        assert exc.code is ErrorCode.MANIFEST_INVALID and not SPEC_TAG.fullmatch(tag)


@PROPS
@given(digests_text)
@example("sha256:" + "a" * 64 + "\n")
def test_digests(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except RegistryError as exc:
        assert exc.code is ErrorCode.DIGEST_INVALID and exc.message
        assert not SPEC_DIGEST.fullmatch(text)
    else:
        assert str(digest) == text and SPEC_DIGEST.fullmatch(text), repr(text)


# -- token scopes -------------------------------------------------------------------------------
scope_texts = texts | st.builds(
    lambda t, n, a: f"{t}:{n}:{a}",
    st.sampled_from(["repository", "registry", "repository(plugin)", "Repo", ""]),
    texts,
    st.lists(st.sampled_from(["pull", "push", "*", "", "delete", "x:y"]), max_size=4).map(",".join),
)


@PROPS
@given(scope_texts)
def test_scope(text: str) -> None:
    try:
        scope = parse_scope(text)
    except ScopeError as exc:
        assert str(exc)
        return
    assert isinstance(scope, Scope) and scope.name
    assert parse_scope(str(scope)) == scope  # what we print (WWW-Authenticate) reads back


@PROPS
@given(st.lists(scope_texts | st.text(" \t", max_size=3), max_size=5))
def test_scopes_never_fail(values: list[str]) -> None:
    scopes = parse_scopes(values)
    assert len(scopes) <= 64 and all(isinstance(s, Scope) for s in scopes)


@PROPS
@given(texts)
@example("example.com/app\n")
@example("localhost:5000/app\n")
def test_scope_repository_names(name: str) -> None:
    if valid_scope_name(name):
        assert "\n" not in name and ".." not in name and len(name) <= 255, repr(name)


# -- Range and Content-Range ---------------------------------------------------------------------
range_texts = texts | st.builds(
    lambda u, a, b: f"{u}={a}-{b}",
    st.sampled_from(["bytes", " bytes", "items", "BYTES"]),
    st.sampled_from(["", "0", "5", "-3", "٣", "1_0", "9" * 5000, " 2"])
    | st.integers(0, 99).map(str),
    st.sampled_from(["", "0", "5", "x", "٣", "1_0", "9" * 5000]) | st.integers(0, 99).map(str),
)


@PROPS
@given(range_texts, st.integers(min_value=0, max_value=100))
@example("bytes=0-" + "9" * 5000, 10)
def test_range_header(value: str, size: int) -> None:
    try:
        start, end = _single_range(value, size)
    except RegistryError as exc:
        assert exc.status == 416 and exc.headers["Content-Range"] == f"bytes */{size}"
    else:
        assert 0 <= start <= end < size
        assert re.fullmatch(r"\s*bytes\s*=\s*[0-9]*-[0-9]*\s*", value), repr(value)


content_range_texts = texts | st.builds(
    lambda p, a, b, t: f"{p}{a}-{b}{t}",
    st.sampled_from(["", "bytes ", "bytes=", "items "]),
    st.sampled_from(["0", "٣", "9" * 5000, "1_0"]) | st.integers(0, 2**70).map(str),
    st.sampled_from(["0", "٣", "9" * 5000]) | st.integers(0, 2**70).map(str),
    st.sampled_from(["", "/*", "/10", "/"]),
)


@PROPS
@given(content_range_texts | st.none())
@example("0-" + "9" * 5000)
@example("٣-٤")
def test_content_range(value: str | None) -> None:
    try:
        rng = parse_content_range(value)
    except RegistryError as exc:
        assert exc.code is ErrorCode.RANGE_INVALID and exc.message
        return
    if rng is not None:
        assert 0 <= rng.start <= rng.end and rng.length == rng.end - rng.start + 1
        assert value is not None and value.strip().isascii(), repr(value)


@PROPS
@given(texts | st.integers(0, 2**64).map(str) | st.none())
@example("²")
@example("9" * 5000)
def test_content_length(value: str | None) -> None:
    try:
        length = parse_length(value)
    except RegistryError as exc:
        assert exc.code is ErrorCode.SIZE_INVALID and exc.message
    else:
        assert length is None or (value is not None and value.isascii() and length >= 0)


# -- manifests ----------------------------------------------------------------------------------
@PROPS
@given(
    encoded(manifest_docs) | encoded(junk),
    st.sampled_from([None, "", mt.OCI_MANIFEST, mt.OCI_INDEX, "application/json", "x/y"]),
)
def test_manifests(data: bytes, content_type: str | None) -> None:
    try:
        manifest = parse_manifest(data, content_type)
    except RegistryError as exc:
        assert exc.code is ErrorCode.MANIFEST_INVALID and exc.message
    else:
        assert isinstance(manifest, Manifest) and manifest.media_type in mt.MANIFESTS
        assert manifest.size == len(data)


# -- JSON bounds --------------------------------------------------------------------------------
def true_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((true_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((true_depth(v) for v in value.values()), default=0)
    return 0


tricky_keys = st.text(alphabet='[]{}"\\ab', max_size=6)


@PROPS
@given(
    json_values(tricky_keys)
    | st.recursive(st.text('[]{}"\\', max_size=8), lambda c: st.lists(c, max_size=3), max_leaves=30)
)
def test_depth_matches_the_document(value: Any) -> None:
    for text in (
        json.dumps(value),
        json.dumps(value, ensure_ascii=False),
        json.dumps(value, indent=1),
    ):
        assert jsonbounds.depth(text) == true_depth(value)
        assert jsonbounds.depth(text.encode()) == true_depth(value)
    assert jsonbounds.depth(json.dumps(value).encode("utf-16")) == true_depth(value)


@PROPS
@given(st.binary(max_size=300) | st.text(alphabet='[]{}"\\,:1 ', max_size=300).map(str.encode))
def test_bounded_loads_only_raises_its_error(data: bytes) -> None:
    try:
        jsonbounds.loads(data, what="document", max_depth=8)
    except jsonbounds.JSONBoundsError as exc:
        assert str(exc).startswith("document ")


@pytest.mark.parametrize("n", [65, 2_000, 100_000])
def test_deep_documents_never_reach_json(n: int) -> None:
    for text in ("[" * n + "]" * n, '{"a":' * n + "1" + "}" * n, "[" * n):
        with pytest.raises(jsonbounds.JSONTooDeep, match=f"nested {n} levels deep"):
            jsonbounds.loads(text, what="doc")


# -- TUF metadata -------------------------------------------------------------------------------
key_doc = documents(
    {
        "keytype": st.sampled_from(["ecdsa", "ecdsa-x509", "ed25519", "rsa", "rsa-x509", "x"]),
        "keyval": documents({"public": b64, "private": st.none() | b64}),
    }
)
role_keys = documents(
    {"keyids": st.lists(st.text(max_size=8), max_size=2), "threshold": st.integers(-1, 3)}
)
file_meta = documents(
    {
        "length": st.integers(-1, 2**64),
        "hashes": st.dictionaries(st.sampled_from(["sha256", "sha512", "md5"]), b64, max_size=2),
        "custom": junk,
    }
)
tuf_body = documents(
    {
        "_type": st.sampled_from(["Root", "Targets", "Snapshot", "Timestamp", "root"]),
        "version": st.integers(-1, 2**64) | st.sampled_from([True, 1.5]),
        "expires": st.sampled_from(
            [
                "2030-01-01T00:00:00Z",
                "2030-01-01T00:00:00.123456789+02:00",
                "2030-13-45T99:99:99Z",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59-23:59",
            ]
        ),
        "keys": st.dictionaries(st.text(max_size=8), key_doc, max_size=2),
        "roles": st.dictionaries(
            st.sampled_from([*list(m.BASE_ROLES), "x"]), role_keys, max_size=4
        ),
        "consistent_snapshot": st.booleans(),
        "meta": st.dictionaries(
            st.sampled_from(["root", "targets", "snapshot", "x"]), file_meta, max_size=3
        ),
        "targets": st.dictionaries(st.text(max_size=8), file_meta, max_size=2),
        "delegations": documents(
            {
                "keys": st.dictionaries(st.text(max_size=8), key_doc, max_size=2),
                "roles": st.lists(
                    documents(
                        {
                            "name": st.sampled_from(["targets/a", "targets/a/b", "x", "targets/"]),
                            "keyids": st.lists(st.text(max_size=8), max_size=2),
                            "threshold": st.integers(-1, 3),
                            "paths": st.lists(st.text(max_size=5), max_size=2),
                        }
                    ),
                    max_size=2,
                ),
            }
        ),
    }
)
envelope = documents(
    {
        "signed": tuf_body,
        "signatures": st.lists(
            documents(
                {
                    "keyid": st.text(max_size=8),
                    "method": st.sampled_from(["ecdsa", "ed25519", "x"]),
                    "sig": b64,
                }
            ),
            max_size=2,
        ),
    }
)


@PROPS
@given(
    encoded(envelope), st.sampled_from(["root", "targets", "targets/a", "snapshot", "timestamp"])
)
def test_tuf_metadata(data: bytes, role: str) -> None:
    parsers = [lambda: m.parse_signed(role, data)]
    if role == m.ROOT:
        parsers.append(lambda: m.parse_root(data))
    elif role.startswith(m.TARGETS):
        parsers.append(lambda: m.parse_targets(role, data))
    else:
        parsers.append(lambda: m.parse_meta_map(role, data))
    for parse in parsers:
        try:
            parse()
        except m.MetadataError as exc:
            assert str(exc)


# -- simple signing and cosign ------------------------------------------------------------------
payload_docs = documents(
    {
        "critical": documents(
            {
                "identity": documents({"docker-reference": st.text(max_size=20)}),
                "image": documents({"docker-manifest-digest": digests_text}),
                "type": st.sampled_from([simplesign.ATOMIC_TYPE, simplesign.COSIGN_TYPE, "x"]),
            }
        ),
        "optional": st.none() | st.dictionaries(st.text(max_size=5), junk, max_size=2),
    }
)


@PROPS
@given(
    encoded(payload_docs), st.sampled_from([None, simplesign.ATOMIC_TYPE, simplesign.COSIGN_TYPE])
)
def test_simple_signing_payloads(data: bytes, expected: str | None) -> None:
    try:
        payload = simplesign.parse_payload(data, expected)
    except simplesign.SignatureFormatError as exc:
        assert str(exc)
    else:
        assert SPEC_DIGEST.fullmatch(payload.manifest_digest)


@PROPS
@given(st.binary(max_size=400))
def test_atomic_signature_containers(data: bytes) -> None:
    """The OpenPGP message around an atomic payload, as uploaded to the signatures extension."""
    try:
        simplesign.inspect_atomic(data)
    except SigningError as exc:
        assert str(exc)


KEY = ec.generate_private_key(ec.SECP256R1()).public_key()
DIGEST = "sha256:" + "ab" * 32
bundle_docs = documents(
    {
        "mediaType": st.sampled_from(
            [
                "application/vnd.dev.sigstore.bundle.v0.3+json",
                "application/vnd.dev.sigstore.bundle+json;version=0.2",
                "x",
            ]
        ),
        "verificationMaterial": documents(
            {
                "publicKey": documents({"hint": st.text(max_size=8)}),
                "tlogEntries": junk,
                "certificate": junk,
            }
        ),
        "dsseEnvelope": documents(
            {
                "payload": b64
                | encoded(
                    documents(
                        {
                            "subject": st.lists(
                                documents(
                                    {
                                        "digest": st.dictionaries(
                                            st.sampled_from(["sha256", "sha512"]),
                                            st.sampled_from(["ab" * 32, "x"]),
                                            max_size=2,
                                        )
                                    }
                                ),
                                max_size=2,
                            )
                        }
                    )
                ).map(lambda b: base64.b64encode(b).decode()),
                "payloadType": st.sampled_from(["application/vnd.in-toto+json", "x"]),
                "signatures": st.lists(
                    documents({"sig": b64, "keyid": st.text(max_size=4)}), max_size=2
                ),
            }
        ),
        "messageSignature": documents(
            {
                "messageDigest": documents(
                    {
                        "algorithm": st.just("SHA2_256"),
                        "digest": b64
                        | st.just(base64.b64encode(bytes.fromhex("ab" * 32)).decode()),
                    }
                ),
                "signature": b64,
            }
        ),
    }
)


@PROPS
@given(encoded(bundle_docs), st.sampled_from([[], [KEY]]))
def test_cosign_bundles(data: bytes, keys: list[ec.EllipticCurvePublicKey]) -> None:
    check = cosign.check_bundle(data, keys, DIGEST)
    assert check.status in ("verified", "failed", "unverifiable")
    assert check.status != "verified"  # nothing here is signed by KEY


@PROPS
@given(
    encoded(payload_docs),
    st.dictionaries(st.sampled_from([cosign.SIG_ANNOTATION, "x"]), b64 | junk, max_size=2),
)
def test_cosign_simple_signing_layers(data: bytes, annotations: dict[str, Any]) -> None:
    assume(isinstance(annotations, dict))
    check = cosign.check_simplesigning(data, annotations, [KEY], DIGEST)
    assert check.status in ("failed", "unverifiable")
