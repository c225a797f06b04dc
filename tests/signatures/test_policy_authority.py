"""Policy kind `authority` against an in-memory registry and Graphs built directly (no statements
issued): which signature counts, and the reasons when none does."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from cryptography.x509.oid import NameOID

from tests.signatures.gpg import GpgKey, atomic_payload, gpg, make_key, stop_agent
from tests.signatures.test_policy_kinds import IMAGE, REPO, FakeRegistry, record, subject_of
from tests.trust_client.evil import Collection as TufCollection
from tests.trust_client.evil import Delegate
from trustyard.authority.model import GrantedKey, Graph, Refusal
from trustyard.crypto.keyid import libtrust_kid, spki_der
from trustyard.crypto.notary_keys import PrivateKey
from trustyard.metadata.base import ManifestRecord
from trustyard.oci import mediatypes as mt
from trustyard.registry.policy import Decision, PolicyConfigError, build_policy
from trustyard.registry.policy_authority import AuthorityCheck, GraphCache
from trustyard.signing import annotations as ann
from trustyard.signing import cosign
from trustyard.signing.authority_match import GrantedKeys

NOW = dt.datetime.now(dt.UTC)


def root_pem(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test root")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def grant(
    key: ec.EllipticCurvePrivateKey,
    namespaces: tuple[str, ...] = ("team/*",),
    user: str = "alice",
    statement: str = "st-1",
    expires: dt.datetime | None = None,
) -> GrantedKey:
    public = key.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return GrantedKey(
        libtrust_kid(public), "pkix", pem, user, namespaces, statement, "CN=authority", expires
    )


@pytest.fixture
def check(tmp_path: Path) -> tuple[FakeRegistry, AuthorityCheck]:
    reg = FakeRegistry()
    ctx = reg.context()

    async def statements() -> list[bytes]:
        return []

    ctx.authority_statements = statements
    spec = {"kind": "authority", "roots": [str(root_pem(tmp_path / "root.pem"))]}
    policy = build_policy([{"name": "r", "require": spec}], ctx)
    assert isinstance(policy.rules[0].check, AuthorityCheck)
    return reg, policy.rules[0].check


def decide(
    check: AuthorityCheck,
    graph: Graph,
    rec: ManifestRecord,
    repo: str = REPO,
    known: tuple[GrantedKey, ...] = (),
) -> Decision:
    keys = GrantedKeys(graph, [(g.key_type, g.key_id, g.public) for g in known])
    return asyncio.run(check.decide(repo, rec, keys))


def sign_tag(reg: FakeRegistry, key: ec.EllipticCurvePrivateKey, rec: ManifestRecord) -> None:
    reg.push(cosign.tag_artifact(cosign.KeySigner(key), f"r.example/{REPO}", str(rec.digest), None))


def test_configuration_errors_name_the_rule_and_the_file(tmp_path: Path) -> None:
    ctx = FakeRegistry().context()

    async def statements() -> list[bytes]:
        return []

    def build(spec: dict[str, Any]) -> None:
        build_policy([{"name": "r", "require": {"kind": "authority", **spec}}], ctx)

    ctx.authority_statements = statements
    with pytest.raises(PolicyConfigError, match=r"'r'.*roots must be a non-empty list"):
        build({})
    with pytest.raises(PolicyConfigError, match=r"cannot read root /nonexistent\.pem"):
        build({"roots": ["/nonexistent.pem"]})
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(PolicyConfigError, match=r"junk\.pem holds no PEM certificate"):
        build({"roots": [str(tmp_path / "junk.pem")]})
    ctx.authority_statements = None
    with pytest.raises(PolicyConfigError, match="serves no authority statements"):
        build({"roots": [str(root_pem(tmp_path / "root.pem"))]})


def test_a_grant_for_the_namespace_admits_a_cosign_signature(
    check: tuple[FakeRegistry, AuthorityCheck],
) -> None:
    reg, kind = check
    key = ec.generate_private_key(ec.SECP256R1())
    image = record(IMAGE)
    sign_tag(reg, key, image)
    got = decide(kind, Graph((grant(key),)), image)
    kid = libtrust_kid(key.public_key())
    assert got == Decision(
        True,
        f"cosign signature by {kid}, granted to alice for team/* by statement st-1",
        kid,
    )


def test_a_grant_for_another_namespace_is_refused_and_named(
    check: tuple[FakeRegistry, AuthorityCheck],
) -> None:
    reg, kind = check
    key = ec.generate_private_key(ec.SECP256R1())
    image = record(IMAGE)
    sign_tag(reg, key, image)
    got = decide(kind, Graph((grant(key, ("other/*",)),)), image)
    kid = libtrust_kid(key.public_key())
    assert not got.ok
    assert f"key {kid} is granted to alice for other/*, not for {REPO}" in got.reason
    # The same signature counts in the namespace the grant names.
    assert decide(kind, Graph((grant(key, ("other/*",)),)), image, "other/app").ok


def test_expired_revoked_and_ungranted_keys_say_why(
    check: tuple[FakeRegistry, AuthorityCheck],
) -> None:
    reg, kind = check
    key = ec.generate_private_key(ec.SECP256R1())
    image = record(IMAGE)
    sign_tag(reg, key, image)
    kid = libtrust_kid(key.public_key())
    # A grant that expired since the Graph was evaluated (the cache keeps it up to a TTL).
    stale = grant(key, expires=NOW - dt.timedelta(seconds=1))
    got = decide(kind, Graph((stale,)), image)
    assert not got.ok and "expired" in got.reason
    # Refused at evaluation (revoked): the refusal's reason is the reason. The key is known
    # from the statement (to name the signer), never granted.
    revoked = Graph((), (Refusal("st-1", "revoked by st-2 (key lost)", kid),))
    got = decide(kind, revoked, image, known=(grant(key),))
    assert not got.ok and "statement st-1: revoked by st-2 (key lost)" in got.reason
    # A key the authority never heard of: the cosign signature is made by no granted key.
    other = ec.generate_private_key(ec.SECP256R1())
    got = decide(kind, Graph((grant(other),)), image)
    assert not got.ok and "made by no key the authority grants" in got.reason


def test_key_granted_but_signature_does_not_verify(
    check: tuple[FakeRegistry, AuthorityCheck],
) -> None:
    reg, kind = check
    key = ec.generate_private_key(ec.SECP256R1())
    image = record(IMAGE)
    good = cosign.tag_artifact(cosign.KeySigner(key), f"r.example/{REPO}", str(image.digest), None)
    doc = json.loads(good.manifest)
    # The signature the granted key made over another image, pasted under this payload.
    other = cosign.tag_artifact(cosign.KeySigner(key), "r.example/x", "sha256:" + "7" * 64, None)
    pasted = json.loads(other.manifest)["layers"][0]["annotations"][cosign.SIG_ANNOTATION]
    doc["layers"][0]["annotations"][cosign.SIG_ANNOTATION] = pasted
    reg.push(cosign.Artifact(good.blobs, json.dumps(doc).encode(), good.tag))
    got = decide(kind, Graph((grant(key),)), image)
    assert not got.ok and "made by no key the authority grants" in got.reason


def test_two_signatures_one_authorized(check: tuple[FakeRegistry, AuthorityCheck]) -> None:
    reg, kind = check
    stranger, granted = (ec.generate_private_key(ec.SECP256R1()) for _ in range(2))
    image = record(IMAGE)
    sign_tag(reg, stranger, image)
    reg.push(
        cosign.referrer_artifact(cosign.KeySigner(granted), f"r/{REPO}", subject_of(image)),
        str(image.digest),
    )
    got = decide(kind, Graph((grant(granted),)), image)
    assert got.ok and got.signer == libtrust_kid(granted.public_key())
    assert got.reason.startswith("cosign signature by ")


def test_no_signatures(check: tuple[FakeRegistry, AuthorityCheck]) -> None:
    _, kind = check
    key = ec.generate_private_key(ec.SECP256R1())
    assert decide(kind, Graph((grant(key),)), record(IMAGE)) == Decision(False, "no signatures")


def irsign_image(reg: FakeRegistry, vendor: ec.EllipticCurvePrivateKey, config: bytes) -> bytes:
    """An image whose config is signed by `vendor` in the ir-sign slot (endorsement unused)."""
    reg.blobs["sha256:" + hashlib.sha256(config).hexdigest()] = config
    signature = vendor.sign(hashlib.sha384(config).digest(), ec.ECDSA(Prehashed(hashes.SHA384())))
    doc = json.loads(IMAGE)
    doc["config"] = {
        "mediaType": cosign.OCI_CONFIG,
        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
        "size": len(config),
    }
    doc["annotations"] = {
        ann.SIGNATURE: signature.hex(),
        ann.VENDORPUB: spki_der(vendor.public_key()).hex(),
        ann.VENDORPUB_SIGNATURE: "00",
    }
    return json.dumps(doc).encode()


def test_irsign_vendor_key_granted(check: tuple[FakeRegistry, AuthorityCheck]) -> None:
    reg, kind = check
    vendor = ec.generate_private_key(ec.SECP384R1())
    image = record(irsign_image(reg, vendor, b'{"architecture":"arm64"}'))
    got = decide(kind, Graph((grant(vendor),)), image)
    assert got.ok and got.reason.startswith("annotations signature by ")
    # The config the signature covers is not the one stored: granted, but does not verify.
    reg.blobs.clear()
    tampered = b'{"architecture":"amd64"}'
    doc = json.loads(image.content)
    doc["config"]["digest"] = "sha256:" + hashlib.sha256(tampered).hexdigest()
    doc["config"]["size"] = len(tampered)
    reg.blobs[doc["config"]["digest"]] = tampered
    got = decide(kind, Graph((grant(vendor),)), record(json.dumps(doc).encode()))
    assert not got.ok and "config signature does not verify with vendor key" in got.reason


@pytest.fixture(scope="module")
def gpg_key() -> Iterator[GpgKey]:
    root = Path(tempfile.mkdtemp(prefix="ty-gpg-"))
    key = make_key(root / "a", "signer")
    yield key
    stop_agent(key)
    shutil.rmtree(root, ignore_errors=True)


def test_simple_signature_by_a_granted_openpgp_key(
    check: tuple[FakeRegistry, AuthorityCheck], gpg_key: GpgKey
) -> None:
    reg, kind = check
    image = record(IMAGE)
    digest = str(image.digest)
    reg.simple[digest] = [gpg_key.sign(atomic_payload(f"r/{REPO}:v1", digest))]
    granted = GrantedKey(
        gpg_key.fingerprint,
        "openpgp",
        gpg_key.public.read_bytes(),
        "bob",
        ("team/*",),
        "st-9",
        "CN=a",
    )
    got = decide(kind, Graph((granted,)), image)
    assert got == Decision(
        True,
        f"simple-signing signature by {gpg_key.fingerprint}, granted to bob for team/* by "
        "statement st-9",
        gpg_key.fingerprint,
    )
    got = decide(kind, Graph(()), image)
    assert not got.ok and f"no statement grants key {gpg_key.fingerprint[-16:]}" in got.reason


def test_composes_with_all_of_and_any_of(tmp_path: Path) -> None:
    reg = FakeRegistry()
    key = ec.generate_private_key(ec.SECP256R1())
    image = record(IMAGE)
    sign_tag(reg, key, image)
    (tmp_path / "cosign.pub").write_bytes(cosign.public_pem(key.public_key()))
    ctx = reg.context()
    loads = []

    async def statements() -> list[bytes]:
        loads.append(1)
        return []

    ctx.authority_statements = statements
    authority = {"kind": "authority", "roots": [str(root_pem(tmp_path / "root.pem"))]}
    cosign_rule = {"kind": "cosign", "keys": [str(tmp_path / "cosign.pub")]}
    for kind, ok in (("all-of", False), ("any-of", True)):
        policy = build_policy([{"name": "r", "require": {"kind": kind, "of": [cosign_rule, authority]}}], ctx)  # fmt: skip
        got = asyncio.run(policy.rules[0].check.verify(REPO, image, "v1"))
        assert got.ok is ok, got
        if not ok:  # the statements grant nothing: the authority part refuses
            assert got.reason == "authority: no signature is authorized: cosign tag " + (
                f"sha256-{image.digest.hex}.sig: cosign signature: the authority grants no EC "
                "key a cosign signature could be made with"
            )
    assert loads, "the authority check evaluated the registry's statements"


def test_graph_cache_follows_the_generation_and_the_ttl() -> None:
    now, generation = [0.0], [1]
    loads: list[GrantedKeys] = []

    async def load() -> GrantedKeys:
        loads.append(GrantedKeys(Graph()))
        return loads[-1]

    async def gen() -> int:
        return generation[0]

    cache = GraphCache(load, gen, ttl=60, clock=lambda: now[0])

    async def run() -> None:
        first = await cache.get()
        now[0] = 59.0
        assert await cache.get() is first
        generation[0] = 2  # a statement was added: evaluated again at once
        second = await cache.get()
        assert second is not first
        now[0] = 119.0
        assert await cache.get() is not second  # too old

    asyncio.run(run())
    assert len(loads) == 3


def test_simple_signature_by_a_subkey_of_a_granted_key(
    check: tuple[FakeRegistry, AuthorityCheck], tmp_path: Path
) -> None:
    """Grants name the primary key; a signature made with its signing subkey counts."""
    reg, kind = check
    key = make_key(tmp_path / "k", "subkeys")
    try:
        env = {**os.environ, **key.env}
        gpg_run = [gpg(), "--batch", "--passphrase", ""]
        subprocess.run([*gpg_run, "--quick-add-key", key.fingerprint, "ed25519", "sign", "never"],
                       env=env, capture_output=True, timeout=120, check=True)  # fmt: skip
        listing = subprocess.run([gpg(), "--with-colons", "--list-keys", key.fingerprint],
                                 env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
        sub = [ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr")][1]
        exported = subprocess.run([gpg(), "--export", key.fingerprint], env=env,
                                  capture_output=True, check=True).stdout  # fmt: skip
        image = record(IMAGE)
        digest = str(image.digest)
        signed = subprocess.run(
            [gpg(), "--batch", "--local-user", f"{sub}!", "--sign"],
            input=atomic_payload(f"r/{REPO}:v1", digest), env=env, capture_output=True,
            timeout=60, check=True,
        ).stdout  # fmt: skip
        reg.simple[digest] = [signed]
        granted = GrantedKey(
            key.fingerprint, "openpgp", exported, "carol", ("team/*",), "st-5", "CN=a"
        )
        got = decide(kind, Graph((granted,)), image)
        assert got.ok and got.signer == key.fingerprint, got
    finally:
        stop_agent(key)


class DictFiles:
    """A trust store holding one collection's files."""

    def __init__(self, gun: str, files: dict[str, bytes]) -> None:
        self.gun, self.files = gun, files

    async def get(self, gun: str, role: str) -> bytes | None:
        return self.files.get(role) if gun == self.gun else None


def test_notary_delegation_key_granted(check: tuple[FakeRegistry, AuthorityCheck]) -> None:
    """The key of the delegation role that signs the tag counts when granted; the collection
    is verified as a whole first."""
    _, kind = check
    image = record(IMAGE)
    signs = {
        "hashes": {"sha256": base64.b64encode(bytes.fromhex(image.digest.hex)).decode()},
        "length": image.size,
    }
    coll = TufCollection(REPO)
    alice = PrivateKey.generate("ecdsa")
    releases = Delegate("targets/releases", [alice], [""])
    delegated = {
        "targets/releases": coll.targets({"v1": signs}, signers=[(alice.public.key_id, alice)])
    }
    files = coll.files(1, {}, delegated=delegated, delegations=[releases])
    kind.ctx.trust_files = DictFiles(REPO, files)
    key = alice.key
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    kid = libtrust_kid(key.public_key())

    got = asyncio.run(kind.decide(REPO, image, GrantedKeys(Graph((grant(key),))), "v1"))
    assert got.ok and got.reason.startswith(f"notary signature by {kid}, granted to alice"), got
    got = asyncio.run(kind.decide(REPO, image, GrantedKeys(Graph()), "v1"))
    assert not got.ok and f"notary {REPO}:v1 (targets/releases): notary signature" in got.reason
    # By digest: the target carrying this digest.
    assert asyncio.run(kind.decide(REPO, image, GrantedKeys(Graph((grant(key),))))).ok
    # Trust data that does not verify is a reason, not a pass.
    kind.ctx.trust_files = DictFiles(REPO, {**files, "snapshot": b"{}"})
    got = asyncio.run(kind.decide(REPO, image, GrantedKeys(Graph((grant(key),))), "v1"))
    assert not got.ok and "notary trust data:" in got.reason


def test_hostile_signatures_are_reasons_not_errors(
    check: tuple[FakeRegistry, AuthorityCheck],
) -> None:
    _, kind = check
    key = ec.generate_private_key(ec.SECP384R1())
    graph = Graph((grant(key),))
    # ir-sign annotations that are not hex, and a vendor key that is no key.
    doc = json.loads(IMAGE)
    doc["annotations"] = {ann.SIGNATURE: "zz", ann.VENDORPUB: "00", ann.VENDORPUB_SIGNATURE: "00"}
    got = decide(kind, graph, record(json.dumps(doc).encode()))
    assert not got.ok and "malformed signature" in got.reason
    # A schema 1 manifest whose JWS is garbage.
    schema1 = json.dumps({"schemaVersion": 1, "name": REPO, "tag": "v1", "signatures": []})
    rec = record(schema1.encode())
    rec = ManifestRecord(
        rec.repository, rec.digest, mt.DOCKER_SCHEMA1_SIGNED, rec.size, rec.content
    )
    got = decide(kind, graph, rec)
    assert not got.ok and got.reason.startswith(
        "no signature is authorized: schema 1 manifest: JWS"
    )
