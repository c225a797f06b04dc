"""Policy kinds `cosign` and `simple-signing` against an in-memory registry (no server): bad
configuration, signatures over other digests, tampered or foreign signatures, exemptions."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.signatures.gpg import GpgKey, atomic_payload, make_key, stop_agent
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import Descriptor
from trustyard.registry.policy import Decision, PolicyConfigError, PolicyContext, build_policy
from trustyard.registry.policy_signatures import KINDS_REGISTERED  # noqa: F401 (registers them)
from trustyard.registry.signature_artifacts import is_signature_artifact
from trustyard.signing import cosign

REPO = "team/app"
IMAGE = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": cosign.OCI_MANIFEST,
        "config": {"mediaType": cosign.OCI_CONFIG, "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + "2" * 64,
                "size": 3,
            }
        ],
    }
).encode()


def record(content: bytes, repo: str = REPO) -> ManifestRecord:
    digest = Digest("sha256", hashlib.sha256(content).hexdigest())
    return ManifestRecord(repo, digest, cosign.OCI_MANIFEST, len(content), content)


class FakeRegistry:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, ManifestRecord] = {}
        self.tags: dict[str, str] = {}
        self.subjects: dict[str, list[Descriptor]] = {}
        self.simple: dict[str, list[bytes]] = {}

    def push(self, artifact: cosign.Artifact, subject: str | None = None) -> None:
        for blob in artifact.blobs:
            self.blobs["sha256:" + hashlib.sha256(blob).hexdigest()] = blob
        rec = record(artifact.manifest)
        self.manifests[str(rec.digest)] = rec
        if artifact.tag:
            self.tags[artifact.tag] = str(rec.digest)
        if subject:
            kind = json.loads(artifact.manifest).get("artifactType")
            desc = Descriptor(cosign.OCI_MANIFEST, rec.digest, rec.size, kind)
            self.subjects.setdefault(subject, []).append(desc)

    def context(self) -> PolicyContext:
        async def read_blob(digest: Digest, limit: int) -> bytes | None:
            data = self.blobs.get(str(digest))
            return data if data is not None and len(data) <= limit else None

        async def get_manifest(repo: str, digest: Digest) -> ManifestRecord | None:
            return self.manifests.get(str(digest))

        async def get_tagged(repo: str, tag: str) -> ManifestRecord | None:
            return self.manifests.get(self.tags.get(tag, ""))

        async def referrers(repo: str, digest: Digest) -> list[Descriptor]:
            return self.subjects.get(str(digest), [])

        async def simple_signatures(repo: str, digest: Digest) -> list[bytes]:
            return self.simple.get(str(digest), [])

        return PolicyContext(
            read_blob, get_manifest, None, get_tagged, referrers, simple_signatures
        )


def decide(reg: FakeRegistry, require: dict[str, Any], rec: ManifestRecord) -> Decision:
    policy = build_policy([{"name": "r", "require": require}], reg.context())
    return asyncio.run(policy.rules[0].check.verify(REPO, rec, "v1"))


@pytest.fixture
def keys(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.pub").write_bytes(cosign.public_pem(key.public_key()))
    return key, tmp_path / "cosign.pub"


def subject_of(rec: ManifestRecord) -> dict[str, Any]:
    return {"mediaType": rec.media_type, "digest": str(rec.digest), "size": rec.size}


def test_bad_configuration_is_refused_with_the_rule_name(tmp_path: Path) -> None:
    ctx = FakeRegistry().context()
    with pytest.raises(PolicyConfigError, match=r"'r'.*cosign: keys must be a non-empty list"):
        build_policy([{"name": "r", "require": {"kind": "cosign"}}], ctx)
    with pytest.raises(PolicyConfigError, match=r"key file /nonexistent\.pub does not exist"):
        build_policy(
            [{"name": "r", "require": {"kind": "cosign", "keys": "/nonexistent.pub"}}], ctx
        )
    (tmp_path / "rsa.pub").write_text("not a key")
    with pytest.raises(PolicyConfigError, match="not a PEM/DER public key"):
        build_policy([{"name": "r", "require": {"kind": "cosign", "keys": [str(tmp_path / "rsa.pub")]}}], ctx)  # fmt: skip
    (tmp_path / "k.gpg").write_bytes(b"x")
    spec = {"kind": "simple-signing", "keys": [str(tmp_path / "k.gpg")], "fingerprints": ["xyz"]}
    with pytest.raises(PolicyConfigError, match="'XYZ' is not a key ID or fingerprint"):
        build_policy([{"name": "r", "require": spec}], ctx)
    no_store = PolicyContext(ctx.read_blob, ctx.get_manifest)
    with pytest.raises(PolicyConfigError, match="stores no simple signatures"):
        build_policy([{"name": "r", "require": {**spec, "fingerprints": []}}], no_store)


def test_each_cosign_shape_verifies(keys: tuple[ec.EllipticCurvePrivateKey, Path]) -> None:
    key, pub = keys
    signer = cosign.KeySigner(key)
    for mode in ("tag", "referrers", "bundle"):
        reg = FakeRegistry()
        image = record(IMAGE)
        digest = str(image.digest)
        if mode == "tag":
            reg.push(cosign.tag_artifact(signer, f"r.example/{REPO}", digest, None))
        elif mode == "referrers":
            reg.push(
                cosign.referrer_artifact(signer, f"r.example/{REPO}", subject_of(image)), digest
            )
        else:
            reg.push(cosign.bundle_artifact(signer, f"r.example/{REPO}", subject_of(image)), digest)
        decision = decide(reg, {"kind": "cosign", "keys": [str(pub)]}, image)
        assert decision.ok, (mode, decision)
        assert decision.signer == cosign.key_id(key.public_key())


def test_cosign_denials_say_why(keys: tuple[ec.EllipticCurvePrivateKey, Path]) -> None:
    key, pub = keys
    spec = {"kind": "cosign", "keys": [str(pub)]}
    image = record(IMAGE)
    digest = str(image.digest)
    tag = f"sha256-{image.digest.hex}.sig"
    assert decide(FakeRegistry(), spec, image) == Decision(
        False, f"no cosign signature of {digest} found"
    )

    # A signature over another image, copied under this image's tag.
    reg = FakeRegistry()
    other = cosign.tag_artifact(cosign.KeySigner(key), "r/x", "sha256:" + "9" * 64, None)
    reg.push(cosign.Artifact(other.blobs, other.manifest, tag))
    got = decide(reg, spec, image)
    assert not got.ok and "belongs to another image" in got.reason

    # Signed by an unknown key.
    reg = FakeRegistry()
    stranger = cosign.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    reg.push(cosign.tag_artifact(stranger, "r/x", digest, None))
    got = decide(reg, spec, image)
    assert not got.ok and "does not verify with this key" in got.reason

    # Tampered base64 signature annotation.
    reg = FakeRegistry()
    good = cosign.tag_artifact(cosign.KeySigner(key), "r/x", digest, None)
    doc = json.loads(good.manifest)
    doc["layers"][0]["annotations"][cosign.SIG_ANNOTATION] = "!!notbase64"
    reg.push(cosign.Artifact(good.blobs, json.dumps(doc).encode(), tag))
    got = decide(reg, spec, image)
    assert not got.ok and "not valid base64" in got.reason

    # A payload blob that is missing from storage.
    reg = FakeRegistry()
    reg.push(good)
    reg.blobs.clear()
    got = decide(reg, spec, image)
    assert not got.ok and "payload blob missing" in got.reason


def test_signature_artifacts_are_exempt_but_disguised_images_are_not(
    keys: tuple[ec.EllipticCurvePrivateKey, Path],
) -> None:
    key, pub = keys
    image = record(IMAGE)
    signer = cosign.KeySigner(key)
    for artifact in (
        cosign.tag_artifact(signer, "r/x", str(image.digest), None),
        cosign.referrer_artifact(signer, "r/x", subject_of(image)),
        cosign.bundle_artifact(signer, "r/x", subject_of(image)),
    ):
        reg = FakeRegistry()
        reg.push(artifact)
        rec = record(artifact.manifest)
        assert asyncio.run(is_signature_artifact(reg.context(), rec))
        assert decide(reg, {"kind": "cosign", "keys": [str(pub)]}, rec).ok
    reg = FakeRegistry()
    assert not asyncio.run(is_signature_artifact(reg.context(), image))
    disguised = json.loads(IMAGE)
    disguised["artifactType"] = cosign.ARTIFACT_SIG
    disguised["config"]["mediaType"] = cosign.ARTIFACT_SIG
    assert not asyncio.run(
        is_signature_artifact(reg.context(), record(json.dumps(disguised).encode()))
    )
    disguised["layers"].append(json.loads(IMAGE)["layers"][0] | {"mediaType": cosign.SIMPLESIGNING})
    assert not asyncio.run(
        is_signature_artifact(reg.context(), record(json.dumps(disguised).encode()))
    )


@pytest.fixture(scope="module")
def gpg_keys() -> Iterator[tuple[GpgKey, GpgKey]]:
    root = Path(tempfile.mkdtemp(prefix="ty-gpg-"))
    a, b = make_key(root / "a", "signer"), make_key(root / "b", "other")
    yield a, b
    stop_agent(a)
    stop_agent(b)
    shutil.rmtree(root, ignore_errors=True)


def test_simple_signing_kind(gpg_keys: tuple[GpgKey, GpgKey]) -> None:
    signer, other = gpg_keys
    image = record(IMAGE)
    digest = str(image.digest)
    spec: dict[str, Any] = {"kind": "simple-signing", "keys": [str(signer.public)]}
    reg = FakeRegistry()
    assert decide(reg, spec, image) == Decision(False, f"no simple signature of {digest} stored")

    reg.simple[digest] = [other.sign(atomic_payload("r/x", digest))]
    got = decide(reg, spec, image)
    assert not got.ok and "not among the trusted keys" in got.reason

    reg.simple[digest] = [signer.sign(atomic_payload("r/x", "sha256:" + "8" * 64))]
    got = decide(reg, spec, image)
    assert not got.ok and "belongs to another image" in got.reason

    reg.simple[digest] = [signer.sign(atomic_payload("r/x", digest, extra={"x": 1}))]
    got = decide(reg, spec, image)
    assert not got.ok and "unknown field(s) extra" in got.reason

    good = signer.sign(atomic_payload(f"r.example/{REPO}:v1", digest))
    tampered = bytearray(good)
    tampered[-5] ^= 0x01
    reg.simple[digest] = [bytes(tampered)]
    assert not decide(reg, spec, image).ok

    reg.simple[digest] = [bytes(tampered), good]
    assert decide(reg, spec, image) == Decision(
        True, "simple signature verified", signer.fingerprint
    )
    # A trusted key that is not among the listed fingerprints is refused.
    narrowed = {**spec, "keys": [str(signer.public), str(other.public)]}
    narrowed["fingerprints"] = [other.fingerprint]
    got = decide(reg, narrowed, image)
    assert not got.ok and "not among the trusted fingerprints" in got.reason
    narrowed["fingerprints"] = [signer.fingerprint[-16:]]  # a long key ID works too
    assert decide(reg, narrowed, image).ok
