"""The trust client against a malicious trust server (tests/trust_client/evil.py): freeze,
rollback, mix-and-match, withheld or altered delegations, a child delegation widening its
parent, one key counted several times toward a threshold, and the root rotation chain.

Each attack goes through real HTTP to `TrustClient.fetch`/`lookup`, as `trustyard trust verify`
does, and must end in a one-line `TrustError`; the legitimate neighbour of each must still pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from tests.trust_client.evil import (
    EARLIER,
    Collection,
    Delegate,
    EvilServer,
    compressed_key,
    digest_of,
    envelope,
    target,
    x509_key,
)
from trustyard.crypto.notary_keys import PrivateKey
from trustyard.trust.client.config import ClientConfig
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.keys import KeyStore
from trustyard.trust.client.repository import TrustClient

GUN = "registry.example/team/app"


@pytest.fixture
def srv() -> Iterator[EvilServer]:
    with EvilServer() as s:
        yield s


@pytest.fixture(autouse=True)
def _no_auth(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NOTARY_AUTH", raising=False)
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "none.json"))


def client(tmp_path: Path, srv: EvilServer) -> TrustClient:
    cfg = ClientConfig(trust_dir=tmp_path / "trust", server=srv.url)
    return TrustClient(cfg, KeyStore(cfg.trust_dir, lambda what, creating: None))


def latest(tmp_path: Path, srv: EvilServer) -> list[tuple[str, str | None]]:
    with client(tmp_path, srv) as c:
        _, hits = c.lookup(GUN, "latest")
    return [(h.role, h.sha256) for h in hits]


def refused(tmp_path: Path, srv: EvilServer, match: str) -> str:
    with client(tmp_path, srv) as c, pytest.raises(TrustError, match=match) as info:
        c.lookup(GUN, "latest")
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_legitimate_collection_verifies_and_every_role_is_kept(
    tmp_path: Path, srv: EvilServer
) -> None:
    coll = Collection(GUN)
    srv.serve(GUN, coll.files(1, {"latest": target("one")}))
    assert latest(tmp_path, srv) == [("targets", digest_of("one"))]
    kept = tmp_path / "trust" / "tuf" / GUN / "metadata"
    assert sorted(p.name for p in kept.iterdir()) == [
        "root.json",
        "snapshot.json",
        "targets.json",
        "timestamp.json",
    ]


def test_freeze_timestamp_and_snapshot_are_required(tmp_path: Path, srv: EvilServer) -> None:
    coll = Collection(GUN)
    good = coll.files(1, {"latest": target("one")})
    srv.serve(GUN, good)
    srv.withhold(GUN, "timestamp")
    refused(tmp_path, srv, "has no timestamp metadata")
    srv.withhold(GUN, "snapshot")
    refused(tmp_path, srv, "has no timestamp metadata")
    srv.serve(GUN, {"timestamp": good["timestamp"]})
    refused(tmp_path, srv, "no snapshot metadata although its timestamp names one")
    # a timestamp that names no snapshot, an expired one, one signed by another key
    srv.serve(GUN, {"snapshot": good["snapshot"], "timestamp": coll.timestamp(None)})
    refused(tmp_path, srv, "timestamp of .* does not name the snapshot")
    srv.serve(GUN, {"timestamp": coll.timestamp(good["snapshot"], expires=EARLIER)})
    refused(tmp_path, srv, "timestamp metadata of .* expired")
    forged = Collection(GUN, timestamp_key=PrivateKey.generate("ed25519"))
    srv.serve(GUN, {"timestamp": forged.timestamp(good["snapshot"])})
    refused(tmp_path, srv, "timestamp of .* is not signed by the root's timestamp key")
    # an expired snapshot, and a snapshot that does not name targets
    old_snap = coll.snapshot({"root": good["root"], "targets": good["targets"]}, expires=EARLIER)
    srv.serve(GUN, {"snapshot": old_snap, "timestamp": coll.timestamp(old_snap)})
    refused(tmp_path, srv, "snapshot metadata of .* expired")
    bare = coll.snapshot({"root": good["root"]})
    srv.serve(GUN, {"snapshot": bare, "timestamp": coll.timestamp(bare)})
    refused(tmp_path, srv, "snapshot of .* does not name the targets metadata")
    # expired targets and an expired root, each properly signed and named
    stale = coll.targets({"latest": target("one")}, expires=EARLIER)
    snap = coll.snapshot({"root": good["root"], "targets": stale})
    srv.serve(GUN, {"targets": stale, "snapshot": snap, "timestamp": coll.timestamp(snap)})
    refused(tmp_path, srv, "targets metadata of .* expired")
    old_root = coll.root(expires=EARLIER)
    srv.serve(GUN, {**coll.files(1, {"latest": target("one")}, root=old_root), "root": old_root})
    refused(tmp_path, srv, "root metadata of .* expired")
    srv.serve(GUN, good)
    assert latest(tmp_path, srv) == [("targets", digest_of("one"))]


def test_mix_and_match_targets_of_another_version(tmp_path: Path, srv: EvilServer) -> None:
    coll = Collection(GUN)
    one = coll.files(1, {"latest": target("one")})
    two = coll.files(2, {"latest": target("two")})
    srv.serve(GUN, {**two, "targets": one["targets"]})
    refused(tmp_path, srv, "targets of .* does not match the snapshot")
    srv.serve(GUN, {**two, "snapshot": one["snapshot"]})
    refused(tmp_path, srv, "snapshot of .* does not match the timestamp")
    # wrong length: one byte more than the snapshot says
    srv.serve(GUN, {**two, "targets": two["targets"] + b" "})
    refused(tmp_path, srv, "targets of .* does not match the snapshot: length")
    srv.serve(GUN, two)
    assert latest(tmp_path, srv) == [("targets", digest_of("two"))]


def test_rollback_to_an_older_collection_is_refused(tmp_path: Path, srv: EvilServer) -> None:
    coll = Collection(GUN)
    one = coll.files(1, {"latest": target("one")})
    two = coll.files(2, {"latest": target("two")})
    srv.serve(GUN, two)
    assert latest(tmp_path, srv) == [("targets", digest_of("two"))]
    # the whole v1 collection replayed, as the server saved it
    srv.serve(GUN, one)
    refused(tmp_path, srv, r"timestamp of .* is version 1, older than the trusted version 2")
    # v1 targets + snapshot with a fresh timestamp (the server holds the timestamp key)
    srv.serve(GUN, {**one, "timestamp": coll.timestamp(one["snapshot"], 3)})
    refused(tmp_path, srv, r"snapshot of .* is version 1, older than the trusted version 2")
    # v1 targets with a fresh snapshot and timestamp (a server-managed snapshot key)
    snap = coll.snapshot({"root": one["root"], "targets": one["targets"]}, 3)
    srv.serve(GUN, {**one, "snapshot": snap, "timestamp": coll.timestamp(snap, 3)})
    refused(tmp_path, srv, r"targets of .* is version 1, older than the trusted version 2")
    # another file at the trusted version 2
    other = coll.targets({"latest": target("evil")}, 2)
    snap = coll.snapshot({"root": one["root"], "targets": other}, 3)
    srv.serve(GUN, {"targets": other, "snapshot": snap, "timestamp": coll.timestamp(snap, 3)})
    refused(tmp_path, srv, "targets of .* version 2 differs from the trusted copy")
    snap = coll.snapshot({"root": one["root"], "targets": two["targets"]}, 2)
    srv.serve(GUN, {**two, "snapshot": snap, "timestamp": coll.timestamp(snap, 3)})
    refused(tmp_path, srv, "snapshot of .* version 2 differs from the trusted copy")
    # the refusals left the trusted copies alone: v3 is accepted
    srv.serve(GUN, coll.files(3, {"latest": target("three")}))
    assert latest(tmp_path, srv) == [("targets", digest_of("three"))]
    # and a root replayed at an older version is refused too
    srv.serve(GUN, coll.files(4, {"latest": target("four")}, root=coll.root(2)))
    assert latest(tmp_path, srv) == [("targets", digest_of("four"))]
    srv.serve(GUN, coll.files(5, {"latest": target("five")}, root=coll.root(1)))
    refused(tmp_path, srv, "root version 1 is older than the trusted version 2")


def test_a_delegation_the_snapshot_names_cannot_be_withheld_or_altered(
    tmp_path: Path, srv: EvilServer
) -> None:
    coll = Collection(GUN)
    alice = PrivateKey.generate("ecdsa")
    releases = Delegate("targets/releases", [alice], [""])
    signer = [(alice.public.key_id, alice)]
    delegated = {"targets/releases": coll.targets({"latest": target("two")}, signers=signer)}
    files = coll.files(1, {"latest": target("one")}, delegated=delegated, delegations=[releases])
    srv.serve(GUN, files)
    assert latest(tmp_path / "a", srv) == [
        ("targets/releases", digest_of("two")),
        ("targets", digest_of("one")),
    ]
    # withheld: no falling back to the older entry in targets
    srv.withhold(GUN, "targets/releases")
    refused(tmp_path / "b", srv, "named by the snapshot but the server did not send it")
    altered = coll.targets({"latest": target("evil")}, 2, signers=signer)
    srv.serve(GUN, {"targets/releases": altered})
    refused(tmp_path / "b", srv, "targets/releases of .* does not match the snapshot")
    # a delegation the snapshot does not name is skipped, as notary does
    unnamed = coll.files(1, {"latest": target("one")}, delegations=[releases])
    srv.serve(GUN, {**unnamed, "targets/releases": delegated["targets/releases"]})
    with client(tmp_path / "c", srv) as c:
        found, hits = c.lookup(GUN, "latest")
    assert [h.role for h in hits] == ["targets"]
    assert any("snapshot does not name it" in w for w in found.warnings)


def test_a_nested_delegation_cannot_widen_its_parent(tmp_path: Path, srv: EvilServer) -> None:
    coll = Collection(GUN)
    ka, kb, kc = (PrivateKey.generate("ecdsa") for _ in range(3))
    a = Delegate("targets/a", [ka], ["a/"])
    b = Delegate("targets/a/b", [kb], [""])  # wider than its parent
    c = Delegate("targets/a/b/c", [kc], ["a/b/"])
    delegated = {
        "targets/a": coll.targets({}, role="targets/a", delegations=[b], signers=[
            (ka.public.key_id, ka)]),
        "targets/a/b": coll.targets(
            {"latest": target("b"), "a/app": target("b-app"), "other/x": target("b-x")},
            delegations=[c],
            signers=[(kb.public.key_id, kb)],
        ),
        "targets/a/b/c": coll.targets(
            {"latest": target("c"), "a/b/ok": target("c-ok"), "a/zz": target("c-zz")},
            signers=[(kc.public.key_id, kc)],
        ),
    }  # fmt: skip
    srv.serve(GUN, coll.files(1, {}, delegated=delegated, delegations=[a]))
    with client(tmp_path, srv) as cl:
        found = cl.fetch(GUN)
    assert found.lookup("latest") == []  # a key limited to a/ cannot sign any tag
    assert found.lookup("other/x") == []
    assert [h.sha256 for h in found.lookup("a/app")] == [digest_of("b-app")]
    assert [h.sha256 for h in found.lookup("a/b/ok")] == [digest_of("c-ok")]
    assert found.lookup("a/zz") == []  # allowed by a and b, not by c
    assert any("outside the paths delegated" in w for w in found.warnings)
    assert found.allows("targets/a/b", "a/x") and not found.allows("targets/a/b", "x")


def test_one_key_in_three_forms_counts_once_toward_a_threshold(
    tmp_path: Path, srv: EvilServer
) -> None:
    shared = PrivateKey.generate("ecdsa")
    forms = [shared.public, x509_key(shared, "one"), x509_key(shared, "two")]
    assert len({k.key_id for k in forms}) == 3
    coll = Collection(GUN, targets_key=shared, role_keys={"targets": (forms, 3)})
    thrice = [(k.key_id, shared) for k in forms]
    files = coll.files(1, {})
    files["targets"] = coll.targets({"latest": target("one")}, signers=thrice)
    files["snapshot"] = coll.snapshot({"root": files["root"], "targets": files["targets"]})
    files["timestamp"] = coll.timestamp(files["snapshot"])
    srv.serve(GUN, files)
    refused(tmp_path / "a", srv, r"not signed by the root's targets keys \(1 of threshold 3")
    # the same key with its EC point compressed: still one signer
    forms = [shared.public, compressed_key(shared)]
    coll2 = Collection(GUN, targets_key=shared, role_keys={"targets": (forms, 2)})
    files = coll2.files(1, {})
    files["targets"] = coll2.targets(
        {"latest": target("one")}, signers=[(k.key_id, shared) for k in forms]
    )
    files["snapshot"] = coll2.snapshot({"root": files["root"], "targets": files["targets"]})
    files["timestamp"] = coll2.timestamp(files["snapshot"])
    srv.serve(GUN, files)
    refused(tmp_path / "a2", srv, r"not signed by the root's targets keys \(1 of threshold 2")
    # three distinct keys meet the threshold
    keys = [shared, PrivateKey.generate("ecdsa"), PrivateKey.generate("ed25519")]
    coll3 = Collection(
        GUN, targets_key=shared, role_keys={"targets": ([k.public for k in keys], 3)}
    )
    files = coll3.files(1, {})
    files["targets"] = coll3.targets(
        {"latest": target("one")}, signers=[(k.public.key_id, k) for k in keys]
    )
    files["snapshot"] = coll3.snapshot({"root": files["root"], "targets": files["targets"]})
    files["timestamp"] = coll3.timestamp(files["snapshot"])
    srv.serve(GUN, files)
    assert latest(tmp_path / "b", srv) == [("targets", digest_of("one"))]
    # the same trick on a delegation: ignored with a warning, its targets do not count
    pub_forms = [shared.public, x509_key(shared, "d1")]
    coll4 = Collection(GUN)
    dele = Delegate("targets/releases", [shared], [""], threshold=2)
    top = coll4.targets({}, delegations=[dele])
    body_keys = {k.key_id: k.to_json() for k in pub_forms}
    # rewrite the delegation to list both forms of the key with threshold 2
    doc = json.loads(top)["signed"]
    doc["delegations"]["keys"] = body_keys
    doc["delegations"]["roles"][0]["keyids"] = list(body_keys)
    top = envelope(doc, [(coll4.targets_key.public.key_id, coll4.targets_key)])
    rel = coll4.targets({"latest": target("x")}, signers=[(k.key_id, shared) for k in pub_forms])
    files = {"root": coll4.root(), "targets": top, "targets/releases": rel}
    files["snapshot"] = coll4.snapshot(dict(files))
    files["timestamp"] = coll4.timestamp(files["snapshot"])
    srv.serve(GUN, files)
    with client(tmp_path / "c", srv) as c:
        found, hits = c.lookup(GUN, "latest")
    assert hits == []
    assert any("1 distinct keys of its threshold 2" in w for w in found.warnings)


def test_root_rotation_follows_the_chain_of_roots(tmp_path: Path, srv: EvilServer) -> None:
    coll = Collection(GUN)
    k1 = coll.root_key
    srv.serve(GUN, coll.files(1, {"latest": target("one")}))
    assert latest(tmp_path, srv) == [("targets", digest_of("one"))]
    k2, k3 = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    coll.root_key = k2
    root2 = coll.root(2, signers=[(k1.public.key_id, k1), (k2.public.key_id, k2)])
    coll.root_key = k3
    root3 = coll.root(3, signers=[(k2.public.key_id, k2), (k3.public.key_id, k3)])
    srv.serve(GUN, coll.files(2, {"latest": target("three")}, root=root3))
    # version 2 withheld: the jump from 1 to 3 cannot be checked
    refused(tmp_path, srv, "root version 2 of .* is missing on the trust server")
    # a forged version 2 (not signed by the trusted root key)
    coll.root_key = k2
    forged = coll.root(2, signers=[(k2.public.key_id, k2)])
    srv.routes[f"/v2/{GUN}/_trust/tuf/2.root.json"] = forged
    refused(tmp_path, srv, "not signed by the previously trusted root keys")
    # version 3 signed only by its own key (not by version 2's)
    coll.root_key = k3
    alone = coll.root(3, signers=[(k3.public.key_id, k3)])
    srv.routes[f"/v2/{GUN}/_trust/tuf/2.root.json"] = root2
    srv.serve(GUN, coll.files(2, {"latest": target("three")}, root=alone))
    refused(tmp_path, srv, "not signed by the previously trusted root keys")
    # the real chain: 1 → 2 → 3
    srv.serve(GUN, coll.files(2, {"latest": target("three")}, root=root3))
    assert latest(tmp_path, srv) == [("targets", digest_of("three"))]
    assert f"/v2/{GUN}/_trust/tuf/2.root.json" in srv.requests


def test_signing_never_builds_on_a_forged_delegation(
    tmp_path: Path, srv: EvilServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that serves a forged `targets/releases` (a target of its own in it) must not get
    alice to re-sign it when she signs a new tag; an expired but genuine one is renewed."""
    monkeypatch.setenv("NOTARY_DELEGATION_PASSPHRASE", "delegation-pass")
    coll = Collection(GUN)
    alice, mallory = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    releases = Delegate("targets/releases", [alice], [""])
    forged = coll.targets({"evil": target("evil")}, signers=[(alice.public.key_id, mallory)])
    srv.serve(
        GUN,
        coll.files(1, {}, delegated={"targets/releases": forged}, delegations=[releases]),
    )
    srv.routes[f"/v2/{GUN}/_trust/tuf/"] = b""
    with client(tmp_path / "alice", srv) as c:
        pem = alice.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        c.keys.import_key(pem, "delegation", "", "alice.pem")
        with pytest.raises(TrustError, match=r"not signed by its own keys .*refusing to sign"):
            c.add_target(GUN, "v2", digest_of("two"), 12)
        assert srv.posted == []
        # genuine but expired: alice renews it, keeping its targets
        expired = coll.targets(
            {"v1": target("one")}, signers=[(alice.public.key_id, alice)], expires=EARLIER
        )
        srv.serve(
            GUN,
            coll.files(2, {}, delegated={"targets/releases": expired}, delegations=[releases]),
        )
        assert c.add_target(GUN, "v2", digest_of("two"), 12) == ["targets/releases"]
    assert len(srv.posted) == 1 and b'"v1"' in srv.posted[0] and b'"v2"' in srv.posted[0]


def test_a_rotated_timestamp_key_starts_its_versions_anew(tmp_path: Path, srv: EvilServer) -> None:
    """Fast-forward recovery (TUF 5.3.11): after a root that changes the timestamp key, the old
    trusted timestamp no longer binds; without a key change a lower version stays refused."""
    coll = Collection(GUN)
    files = coll.files(1, {"latest": target("one")})
    snap = files["snapshot"]
    srv.serve(GUN, {**files, "timestamp": coll.timestamp(snap, 9)})
    assert latest(tmp_path, srv) == [("targets", digest_of("one"))]
    srv.serve(GUN, {"timestamp": coll.timestamp(snap, 1)})
    refused(tmp_path, srv, "timestamp of .* is version 1, older than the trusted version 9")
    coll.timestamp_key = PrivateKey.generate("ed25519")
    root2 = coll.root(2)
    snap2 = coll.snapshot({"root": root2, "targets": files["targets"]}, 2)
    srv.serve(GUN, {"root": root2, "snapshot": snap2, "timestamp": coll.timestamp(snap2, 1)})
    assert latest(tmp_path, srv) == [("targets", digest_of("one"))]
