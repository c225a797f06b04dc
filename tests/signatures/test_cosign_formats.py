"""cosign/sigstore formats without a network: published vectors and every bad-input case.

sigstore-js could not be used as an independent verifier here (no npm registry access from the
test machine); these vectors come from the published specs and a real `cosign generate-key-pair`.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.signing import cosign
from trustyard.signing.errors import KeyFormatError, SignatureFormatError
from trustyard.signing.simplesign import make_payload, parse_payload

# A key made by `cosign generate-key-pair` with an empty password, published with its public key
# in edgelesssys/constellation (cli/internal/cmd/upgradeplan_test.go).
COSIGN_KEY = b"""-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----
eyJrZGYiOnsibmFtZSI6InNjcnlwdCIsInBhcmFtcyI6eyJOIjozMjc2OCwiciI6
OCwicCI6MX0sInNhbHQiOiJlRHVYMWRQMGtIWVRnK0xkbjcxM0tjbFVJaU92eFVX
VXgvNi9BbitFVk5BPSJ9LCJjaXBoZXIiOnsibmFtZSI6Im5hY2wvc2VjcmV0Ym94
Iiwibm9uY2UiOiJwaWhLL2txNmFXa2hqSVVHR3RVUzhTVkdHTDNIWWp4TCJ9LCJj
aXBoZXJ0ZXh0Ijoidm81SHVWRVFWcUZ2WFlQTTVPaTVaWHM5a255bndZU2dvcyth
VklIeHcrOGFPamNZNEtvVjVmL3lHRHR0K3BHV2toanJPR1FLOWdBbmtsazFpQ0c5
a2czUXpPQTZsU2JRaHgvZlowRVRZQ0hLeElncEdPRVRyTDlDenZDemhPZXVSOXJ6
TDcvRjBBVy9vUDVqZXR3dmJMNmQxOEhjck9kWE8yVmYxY2w0YzNLZjVRcnFSZzlN
dlRxQWFsNXJCNHNpY1JaMVhpUUJjb0YwNHc9PSJ9
-----END ENCRYPTED COSIGN PRIVATE KEY-----
"""
COSIGN_PUB = b"""-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu78QgxOOcao6U91CSzEXxrKhvFTt
JHNy+eX6EMePtDm8CnDF9HSwnTlD0itGJ/XHPQA5YX10fJAqI1y+ehlFMw==
-----END PUBLIC KEY-----
"""
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def test_decrypts_a_real_cosign_key() -> None:
    key = cosign.load_private_key(COSIGN_KEY, b"", "cosign.key")
    pub = cosign.load_public_key(COSIGN_PUB, "cosign.pub")
    assert cosign.spki_der(key.public_key()) == cosign.spki_der(pub)
    with pytest.raises(KeyFormatError, match="wrong password"):
        cosign.load_private_key(COSIGN_KEY, b"not-empty", "cosign.key")


def test_our_encrypted_keys_round_trip_and_use_cosign_parameters() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = cosign.encrypt_cosign_key(key, b"pw")
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----")
    body = base64.b64decode(b"".join(pem.splitlines()[1:-1]))
    doc = json.loads(body)
    assert doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert doc["cipher"]["name"] == "nacl/secretbox"
    loaded = cosign.load_private_key(pem, b"pw", "k")
    assert loaded.private_numbers() == key.private_numbers()


def test_dsse_pae_matches_the_spec_example() -> None:
    # secure-systems-lab/dsse protocol.md
    assert cosign.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_payload_is_cosign_byte_format() -> None:
    assert make_payload("reg/app", DIGEST) == (
        b'{"critical":{"identity":{"docker-reference":"reg/app"},"image":'
        b'{"docker-manifest-digest":"' + DIGEST.encode() + b'"},"type":"cosign container image '
        b'signature"},"optional":null}'
    )


def signer(
    curve: ec.EllipticCurve = ec.SECP256R1(),
) -> tuple[cosign.KeySigner, ec.EllipticCurvePublicKey]:
    key = ec.generate_private_key(curve)
    return cosign.KeySigner(key), key.public_key()


def layer_parts(artifact: cosign.Artifact) -> tuple[bytes, dict[str, str]]:
    manifest = json.loads(artifact.manifest)
    return artifact.blobs[0], manifest["layers"][-1]["annotations"]


def test_each_format_verifies_with_the_right_key_only() -> None:
    s, pub = signer()
    _, stranger = signer()
    subject = {"mediaType": cosign.OCI_MANIFEST, "digest": DIGEST, "size": 10}
    for artifact in (
        cosign.tag_artifact(s, "reg/app", DIGEST, None),
        cosign.referrer_artifact(s, "reg/app", subject),
    ):
        payload, annotations = layer_parts(artifact)
        assert cosign.check_simplesigning(payload, annotations, [pub], DIGEST).status == "verified"
        bad = cosign.check_simplesigning(payload, annotations, [stranger], DIGEST)
        assert bad.status == "failed" and "does not verify" in bad.reason
    bundle = cosign.make_bundle(s, "reg/app", DIGEST)
    assert cosign.check_bundle(bundle, [pub], DIGEST).status == "verified"
    assert cosign.check_bundle(bundle, [stranger], DIGEST).status == "failed"
    tagged = json.loads(cosign.tag_artifact(s, "reg/app", DIGEST, None).manifest)
    assert tagged["layers"][0]["mediaType"] == cosign.SIMPLESIGNING
    referrer = json.loads(cosign.referrer_artifact(s, "reg/app", subject).manifest)
    assert referrer["artifactType"] == referrer["config"]["mediaType"] == cosign.ARTIFACT_SIG


# -- bad input ---------------------------------------------------------------------------------
def test_signature_over_another_digest() -> None:
    s, pub = signer()
    payload, annotations = layer_parts(cosign.tag_artifact(s, "reg/app", OTHER, None))
    check = cosign.check_simplesigning(payload, annotations, [pub], DIGEST)
    assert check.status == "failed" and "another image" in check.reason
    bundle = cosign.make_bundle(s, "reg/app", OTHER)
    assert "another image" in cosign.check_bundle(bundle, [pub], DIGEST).reason


def test_payload_digest_mismatch_even_when_validly_signed() -> None:
    s, pub = signer()
    payload = make_payload("reg/app", OTHER)
    annotations = {cosign.SIG_ANNOTATION: base64.b64encode(s.sign(payload)).decode()}
    check = cosign.check_simplesigning(payload, annotations, [pub], DIGEST)
    assert check.status == "failed" and OTHER in check.reason


def test_unknown_critical_fields_are_refused() -> None:
    s, pub = signer()
    doc = json.loads(make_payload("reg/app", DIGEST))
    doc["critical"]["extra"] = "x"
    payload = json.dumps(doc).encode()
    annotations = {cosign.SIG_ANNOTATION: base64.b64encode(s.sign(payload)).decode()}
    check = cosign.check_simplesigning(payload, annotations, [pub], DIGEST)
    assert check.status == "failed" and "unknown field(s) extra in critical" in check.reason
    doc = json.loads(make_payload("reg/app", DIGEST))
    doc["critical"]["image"]["tag"] = "v1"
    with pytest.raises(SignatureFormatError, match=r"critical\.image"):
        parse_payload(json.dumps(doc).encode())


def test_tampered_base64() -> None:
    s, pub = signer()
    payload, annotations = layer_parts(cosign.tag_artifact(s, "reg/app", DIGEST, None))
    broken = {cosign.SIG_ANNOTATION: annotations[cosign.SIG_ANNOTATION][:-4] + "!!!!"}
    check = cosign.check_simplesigning(payload, broken, [pub], DIGEST)
    assert check.status == "failed" and "not valid base64" in check.reason
    bundle = json.loads(cosign.make_bundle(s, "reg/app", DIGEST))
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = "%%%"
    assert (
        "not valid base64" in cosign.check_bundle(json.dumps(bundle).encode(), [pub], DIGEST).reason
    )
    flipped = bytearray(payload)
    flipped[-3] ^= 1
    assert cosign.check_simplesigning(bytes(flipped), annotations, [pub], DIGEST).status == "failed"


def test_unknown_key_and_no_key() -> None:
    s, _ = signer()
    _, stranger = signer(ec.SECP384R1())
    payload, annotations = layer_parts(cosign.tag_artifact(s, "reg/app", DIGEST, None))
    assert cosign.check_simplesigning(payload, annotations, [stranger], DIGEST).status == "failed"
    none = cosign.check_simplesigning(payload, annotations, [], DIGEST)
    assert none.status == "unverifiable" and "no trusted key" in none.reason


def test_p384_key_with_the_wrong_hash() -> None:
    """P-384 verifies with SHA-384 (the curve's hash); cosign's SHA-256 default needs --hash."""
    key = ec.generate_private_key(ec.SECP384R1())
    payload = make_payload("reg/app", DIGEST)
    sha256_sig = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    annotations = {cosign.SIG_ANNOTATION: base64.b64encode(sha256_sig).decode()}
    check = cosign.check_simplesigning(payload, annotations, [key.public_key()], DIGEST)
    assert check.status == "failed" and "verified with sha384" in check.reason
    ok = cosign.check_simplesigning(payload, annotations, [key.public_key()], DIGEST, "sha256")
    assert ok.status == "verified"
    ours = cosign.tag_artifact(cosign.KeySigner(key), "reg/app", DIGEST, None)
    p, a = layer_parts(ours)
    assert cosign.check_simplesigning(p, a, [key.public_key()], DIGEST).status == "verified"


def test_keyless_bundle_is_reported_not_crashed() -> None:
    s, pub = signer()
    bundle = json.loads(cosign.make_bundle(s, "reg/app", DIGEST))
    bundle["verificationMaterial"] = {
        "certificate": {"rawBytes": base64.b64encode(b"not checked").decode()},
        "tlogEntries": [{"logIndex": "1"}],
    }
    check = cosign.check_bundle(json.dumps(bundle).encode(), [], DIGEST)
    assert check.status == "unverifiable"
    assert any("keyless verification is out of scope" in n for n in check.notes)
    assert any("transparency log" in n for n in check.notes)
    cert_annotations = {cosign.SIG_ANNOTATION: "AAAA", cosign.CERT_ANNOTATIONS[0]: "PEM"}
    check = cosign.check_simplesigning(make_payload("r", DIGEST), cert_annotations, [pub], DIGEST)
    assert check.status == "failed" and any("Fulcio" in n for n in check.notes)


def test_garbage_bundles_fail_cleanly() -> None:
    for data in (
        b"",
        b"[]",
        b"{}",
        b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}',
    ):
        assert cosign.check_bundle(data, [], DIGEST).status == "failed"
