"""Schema 1 manifests: the pretty-JWS payload and digest (oci/schema1.py), the signatures
(crypto/jws.py), and the hostile documents each is refused with a reason for.

The two fixtures in data/ were cross-checked with the real libtrust code in skopeo:
`schema1-skopeo.json` is what `skopeo copy --format v2s1 … dir:` wrote (compact, formatTail
"}"), `schema1-pretty.json` is tests/jws_sign.py's indented form (formatTail "\\n}"); the
digests below are what `skopeo manifest-digest` printed for each.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.jws_sign import Key, b64url, manifest_body, p256, protected, sign_pretty
from trustyard.crypto.jws import JwsError, verify_schema1
from trustyard.oci import mediatypes as mt
from trustyard.oci import schema1
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.manifest import content_digest, parse_manifest, stored_blobs

DATA = Path(__file__).parent / "data"
SKOPEO = (DATA / "schema1-skopeo.json").read_bytes()
SKOPEO_DIGEST = "sha256:bf28c4451f29b95ae1ad7506d4c7d757b8b498674b7cd0f006ede1b63385538c"
SKOPEO_KID = "5UYI:GRSK:CLCB:HSCB:N2JO:BUL5:WFPB:YMXJ:U6CT:CNL3:GJTT:VOMV"
PRETTY = (DATA / "schema1-pretty.json").read_bytes()
PRETTY_DIGEST = "sha256:e796899a66ac3d014907a63754bbcc09b7a7bb923290085a2ab0927ed054f268"
LAYERS = ["sha256:" + "a" * 64, "sha256:" + "b" * 64]


def body(name: str = "team/app") -> dict[str, object]:
    return manifest_body(name, LAYERS)


def refused(raw: bytes) -> str:
    with pytest.raises(JwsError) as info:
        verify_schema1(raw)
    return info.value.reason


# -- digests against the real client's ----------------------------------------------------------


def test_skopeo_fixture_digest_and_signer() -> None:
    parsed = schema1.parse(SKOPEO)
    assert str(parsed.digest) == SKOPEO_DIGEST
    assert str(parsed.digest) != "sha256:" + hashlib.sha256(SKOPEO).hexdigest()
    assert parsed.payload.endswith(b"}") and b"signatures" not in parsed.payload
    [signer] = verify_schema1(SKOPEO)
    assert (signer.key_id, signer.alg, signer.chain) == (SKOPEO_KID, "ES256", ())


def test_pretty_fixture_digest() -> None:
    parsed = schema1.parse(PRETTY)
    assert str(parsed.digest) == PRETTY_DIGEST
    assert parsed.payload.endswith(b"\n}")
    assert (parsed.name, parsed.tag, parsed.architecture) == ("library/pretty", "v1", "amd64")
    assert [str(d) for d in parsed.blob_sums] == LAYERS
    assert len(verify_schema1(PRETTY)) == 1


def test_parse_manifest_refuses_schema1_unless_allowed() -> None:
    with pytest.raises(RegistryError) as info:
        parse_manifest(PRETTY, mt.DOCKER_SCHEMA1_SIGNED)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    assert "schema1" in info.value.message and "v2s2" in info.value.message
    manifest = parse_manifest(PRETTY, mt.DOCKER_SCHEMA1_SIGNED, schema1_ok=True)
    assert manifest.media_type == mt.DOCKER_SCHEMA1_SIGNED
    assert str(manifest.digest) == PRETTY_DIGEST and manifest.size == len(PRETTY)
    assert [str(d) for d in stored_blobs(manifest)] == LAYERS  # what GC keeps alive
    # a v1+json Content-Type on a signed document: still the signed manifest, same digest
    assert parse_manifest(PRETTY, mt.DOCKER_SCHEMA1, schema1_ok=True).digest == manifest.digest
    assert str(content_digest(PRETTY, mt.DOCKER_SCHEMA1_SIGNED)) == PRETTY_DIGEST


def test_unsigned_is_parsed_but_not_verified() -> None:
    raw = json.dumps(body()).encode()
    parsed = schema1.parse(raw)  # containers/image digests the whole document then
    assert (
        parsed.signatures == ()
        and str(parsed.digest) == "sha256:" + hashlib.sha256(raw).hexdigest()
    )
    assert parse_manifest(raw, mt.DOCKER_SCHEMA1, schema1_ok=True).media_type == mt.DOCKER_SCHEMA1
    assert "not signed" in refused(raw)


# -- signatures -------------------------------------------------------------------------------


def test_tampered_payload() -> None:
    raw = PRETTY.replace(b'"amd64"', b'"arm64"')
    assert "does not verify" in refused(raw)


def test_tampered_signature() -> None:
    doc = json.loads(PRETTY)
    sig = doc["signatures"][0]["signature"]
    bad = ("B" if sig[0] == "A" else "A") + sig[1:]
    assert "does not verify" in refused(PRETTY.replace(sig.encode(), bad.encode()))


def test_two_signatures_both_checked() -> None:
    a, b = p256(), Key(ec.generate_private_key(ec.SECP384R1()))
    raw = sign_pretty(body(), [a, b])
    assert [(s.key_id, s.alg) for s in verify_schema1(raw)] == [(a.kid, "ES256"), (b.kid, "ES384")]
    doc = json.loads(raw)
    other = json.loads(sign_pretty(body("team/other"), [b]))["signatures"][0]["signature"]
    reason = refused(raw.replace(doc["signatures"][1]["signature"].encode(), other.encode()))
    assert "signatures[1]" in reason and b.kid in reason


def test_format_tail_mismatch_between_signatures() -> None:
    raw = sign_pretty(body(), [p256(), p256()])
    doc = json.loads(raw)
    first = doc["signatures"][0]["protected"]
    length = json.loads(base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)))["formatLength"]
    doc["signatures"][1]["protected"] = protected(length, b"\n }")
    raw = _redump(raw, doc)
    with pytest.raises(RegistryError) as info:
        schema1.parse(raw)
    assert info.value.code is ErrorCode.MANIFEST_UNVERIFIED
    assert "disagrees" in info.value.message
    assert "disagrees" in refused(raw)


def test_format_length_past_the_end() -> None:
    doc = json.loads(PRETTY)
    prot = doc["signatures"][0]["protected"]
    assert "past the end" in refused(PRETTY.replace(prot.encode(), protected(10**6, b"}").encode()))


def test_content_outside_the_payload() -> None:
    """Bytes after formatLength are not signed: members hidden there are refused, since a
    client reading the whole document would see layers the signer never named."""
    evil = PRETTY[:-2] + b',\n   "fsLayers": [{"blobSum": "sha256:' + b"c" * 64 + b'"}]\n}'
    assert "outside its signed payload" in refused(evil)


def test_unknown_and_mismatched_alg() -> None:
    raw = sign_pretty(body(), [p256()])
    doc = json.loads(raw)
    for alg in ("HS256", "none", "EdDSA", "ES256K", None):
        doc["signatures"][0]["header"]["alg"] = alg
        assert "unsupported alg" in refused(_redump(raw, doc))
    raw = sign_pretty(body(), [Key(ec.generate_private_key(ec.SECP384R1()))])
    doc = json.loads(raw)
    doc["signatures"][0]["header"]["alg"] = "ES256"  # libtrust ties ES256 to P-256 too
    assert "needs an EC secp256r1 key" in refused(_redump(raw, doc))
    doc["signatures"][0]["header"]["alg"] = "RS256"
    assert "needs an RSA key" in refused(_redump(raw, doc))


def _redump(raw: bytes, doc: dict[str, object]) -> bytes:
    """`raw` with its signatures member replaced by `doc`'s (the signed prefix untouched)."""
    start = raw.index(b',\n   "signatures": ')
    return raw[:start] + b',\n   "signatures": ' + json.dumps(doc["signatures"]).encode() + b"\n}"


def test_rsa_keys() -> None:
    rsa_key = rsa.generate_private_key(65537, 2048)
    for alg in ("RS256", "RS512", "PS256"):
        [signer] = verify_schema1(sign_pretty(body(), [Key(rsa_key, alg=alg)]))
        assert signer.alg == alg and isinstance(signer.public_key, rsa.RSAPublicKey)
    weak = Key(rsa.generate_private_key(65537, 1024), alg="RS256")
    assert "1024 bits" in refused(sign_pretty(body(), [weak]))


def test_jwk_problems() -> None:
    raw = sign_pretty(body(), [p256()])
    doc = json.loads(raw)
    jwk = doc["signatures"][0]["header"]["jwk"]
    jwk["kid"] = "AAAA:" * 11 + "AAAA"
    assert "is not the key's libtrust KeyID" in refused(_redump(raw, doc))
    jwk.pop("kid")
    assert len(verify_schema1(_redump(raw, doc))) == 1  # kid is optional
    jwk["d"] = "AAAA"
    assert "private key material" in refused(_redump(raw, doc))
    jwk.pop("d")
    jwk["x"] = "AAAA"
    assert "not a valid public key" in refused(_redump(raw, doc))
    doc["signatures"][0]["header"] = {"alg": "ES256"}
    assert "names no key" in refused(_redump(raw, doc))


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[str, ec.EllipticCurvePrivateKey] | None = None,
    *,
    ca: bool = False,
    signs: bool = True,
) -> x509.Certificate:
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(signs, False, False, False, False, ca, ca, False, False), critical=True
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def test_x5c_chain() -> None:
    ca_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = _cert("Test CA", ca_key, ca=True)
    leaf = _cert("builder", leaf_key, ("Test CA", ca_key))
    [signer] = verify_schema1(sign_pretty(body(), [Key(leaf_key, chain=[leaf, ca])]))
    assert signer.chain == (leaf, ca) and signer.key_id == Key(leaf_key).kid

    stranger = _cert("Test CA", ec.generate_private_key(ec.SECP256R1()), ca=True)
    reason = refused(sign_pretty(body(), [Key(leaf_key, chain=[leaf, stranger])]))
    assert "is not issued by the next one" in reason

    no_signing = _cert("builder", leaf_key, ("Test CA", ca_key), signs=False)
    assert "digitalSignature" in refused(sign_pretty(body(), [Key(leaf_key, chain=[no_signing])]))

    raw = sign_pretty(body(), [Key(leaf_key, chain=[leaf])])
    doc = json.loads(raw)
    doc["signatures"][0]["header"]["x5c"] = ["not base64!"]
    assert "not a base64 DER certificate" in refused(_redump(raw, doc))
    doc["signatures"][0]["header"]["x5c"] = [base64.b64encode(b"\x30\x03junk").decode()] * 9
    assert "at most 8" in refused(_redump(raw, doc))


# -- garbage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.update(signatures="x"), "non-empty array"),
        (lambda d: d.update(signatures=[]), "non-empty array"),
        (lambda d: d.update(signatures=[1]), "must be an object"),
        (lambda d: d["signatures"][0].update(protected="***"), "not base64url"),
        (lambda d: d["signatures"][0].update(protected=b64url(b"[1]")), "not a JSON object"),
        (lambda d: d["signatures"][0].update(protected=b64url(b"{")), "protected header"),
        (
            lambda d: d["signatures"][0].update(protected=b64url(b'{"formatTail":"fQ"}')),
            "no valid formatLength",
        ),
        (
            lambda d: d["signatures"][0].update(protected=b64url(b'{"formatLength":true}')),
            "no valid formatLength",
        ),
        (lambda d: d["signatures"][0].update(protected="A" * 5000), "over 4096 bytes"),
        (lambda d: d["signatures"][0].update(signature="a+b/"), "not base64url"),
        (lambda d: d["signatures"][0].pop("header"), "no 'header'"),
        (lambda d: d.update(signatures=d["signatures"] * 17), "at most 16"),
    ],
)
def test_garbage_signatures(mutate: object, reason: str) -> None:
    doc = json.loads(PRETTY)
    mutate(doc)  # type: ignore[operator]
    assert reason in refused(_redump(PRETTY, doc))


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{" * 5000, "nested 5000 levels deep"),
        (json.dumps({**body(), "fsLayers": []}).encode(), "'fsLayers' must be a non-empty array"),
        (json.dumps({**body(), "history": []}).encode(), "0 history entries for 2 fsLayers"),
        (json.dumps({**body(), "name": 7}).encode(), "'name' must be a string"),
        (
            json.dumps(manifest_body("a", ["tarsum+sha256:" + "a" * 64])).encode(),
            "tarsum",
        ),
        (json.dumps(manifest_body("a", ["sha256:xyz"])).encode(), "fsLayers[0]"),
    ],
)
def test_garbage_documents(document: bytes, reason: str) -> None:
    with pytest.raises(RegistryError) as info:
        parse_manifest(document, mt.DOCKER_SCHEMA1, schema1_ok=True)
    assert info.value.code is ErrorCode.MANIFEST_INVALID
    assert reason in info.value.message
    assert refused(document)  # the verifier reads the same parser: a reason, not a traceback
