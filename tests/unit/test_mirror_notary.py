"""The mirror's kept copy of upstream Notary trust data (registry/mirror_notary.py): admission
fetches without writing, the pull path answers from the kept copy within the mirror's TTL,
refreshes after it, verifies offline while the copy is current, and fails closed once it has
expired with the upstream unreachable. The collections are real signed Notary metadata
(tests/trust_client/evil.py builds them); the upstream is an in-memory `FileSource`."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.trust_client.evil import EARLIER, Collection, digest_of, target
from trustyard.config import MirrorSettings, Settings
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.registry.mirror_admission import MirrorNames
from trustyard.registry.mirror_notary import MirrorNotary, NotaryMirror
from trustyard.registry.policy import PolicyContext, build_policy
from trustyard.remote.upstream_errors import UpstreamUnavailable
from trustyard.trust.client.pinning import TrustPinning, canonical_key_id
from trustyard.trust.client.remote import TrustServerUnreachable
from trustyard.trust.client.verify import VerifyError
from trustyard.wiring.mirror_admission import uses_notary

PREFIX = "up.example:5000/"
GUN = PREFIX + "library/app"


class Upstream:
    """An upstream trust server's files; `down` makes every read an outage."""

    def __init__(self) -> None:
        self.files: dict[str, dict[str, bytes]] = {}
        self.down = False
        self.reads = 0

    async def get(self, gun: str, role: str) -> bytes | None:
        self.reads += 1
        if self.down:
            raise UpstreamUnavailable("upstream http://up.example:5000 failed: ConnectError")
        return self.files.get(gun, {}).get(role)


def world(tmp_path: Path, ttl: float = 60.0) -> tuple[MirrorNotary, Upstream, Collection]:
    upstream = Upstream()
    coll = Collection(GUN)
    upstream.files[GUN] = coll.files(1, {"v1": target("one")})
    mirror = NotaryMirror(MirrorNames("hub", "library"), PREFIX, upstream, ttl, "http://up")
    return MirrorNotary([mirror], tmp_path / "mirror-trust"), upstream, coll


def pin(coll: Collection) -> TrustPinning:
    root_id = canonical_key_id(coll.root_key.public)
    return TrustPinning(certs={GUN: (root_id,)}, disable_tofu=True)


def kept_stamp(tmp_path: Path) -> Path:
    return tmp_path / "mirror-trust" / "tuf" / GUN / "metadata" / "timestamp.json"


def age(tmp_path: Path, seconds: float) -> None:
    stamp = kept_stamp(tmp_path)
    then = stamp.stat().st_mtime - seconds
    os.utime(stamp, (then, then))


def test_settings_trust_server_and_gun_prefix() -> None:
    plain = MirrorSettings(prefix="hub", upstream="http://127.0.0.1:5001/")
    assert plain.trust_server is None and plain.notary_gun_prefix() == "127.0.0.1:5001/"
    custom = MirrorSettings(
        prefix="hub",
        upstream="https://registry-1.docker.io",
        trust_server="https://notary.docker.io",
        trust_gun_prefix="docker.io/",
    )
    assert custom.notary_gun_prefix() == "docker.io/"
    with pytest.raises(ValidationError, match="trust_server"):
        MirrorSettings(prefix="hub", upstream="http://a", trust_server="notary.example")


def test_gun_is_the_upstream_name(tmp_path: Path) -> None:
    notary, _, _ = world(tmp_path)
    assert notary.gun("hub/app") == GUN
    assert notary.gun("hub/team/app") == PREFIX + "library/team/app"
    assert notary.gun("other/app") is None


async def test_fetch_writes_nothing_remember_keeps(tmp_path: Path) -> None:
    notary, _, coll = world(tmp_path)
    got = await notary.fetch(GUN, pin(coll))
    assert got.lookup("v1")[0].sha256 == digest_of("one")
    assert not (tmp_path / "mirror-trust").exists()  # a refusal after this leaves nothing
    await notary.remember(GUN, got.verified())
    assert kept_stamp(tmp_path).is_file()


async def test_pull_path_kept_copy_ttl_refresh_offline_and_expiry(tmp_path: Path) -> None:
    notary, upstream, coll = world(tmp_path)
    # Nothing kept, upstream down: unreachable (the policy refuses, naming the server).
    upstream.down = True
    with pytest.raises(TrustServerUnreachable, match="ConnectError"):
        await notary.collection(GUN, pin(coll))
    # Nothing kept, upstream up: fetched, verified and kept.
    upstream.down = False
    await notary.collection(GUN, pin(coll))
    assert kept_stamp(tmp_path).is_file()
    # Within the TTL the kept copy answers: no upstream read.
    reads = upstream.reads
    assert (await notary.collection(GUN, pin(coll))).lookup("v1")
    assert upstream.reads == reads
    # After the TTL the upstream is asked; what it signs now is kept.
    upstream.files[GUN] = coll.files(2, {"v1": target("two")})
    age(tmp_path, 120)
    got = await notary.collection(GUN, pin(coll))
    assert got.lookup("v1")[0].sha256 == digest_of("two") and upstream.reads > reads
    # After the TTL with the upstream down: the kept copy, verified as it is.
    age(tmp_path, 120)
    upstream.down = True
    got = await notary.collection(GUN, pin(coll))
    assert got.lookup("v1")[0].sha256 == digest_of("two")
    # The kept timestamp expires while the upstream is down: fail closed, saying why.
    files = dict(got.verified())
    files["timestamp"] = coll.timestamp(files["snapshot"], 3, expires=EARLIER)
    await notary.remember(GUN, files)
    with pytest.raises(VerifyError, match=r"expired.*cannot be asked"):
        await notary.collection(GUN, pin(coll))


async def test_rollback_and_unpinned_root_refused(tmp_path: Path) -> None:
    notary, upstream, coll = world(tmp_path)
    old = dict(upstream.files[GUN])
    await notary.collection(GUN, pin(coll))
    upstream.files[GUN] = coll.files(2, {"v1": target("two")})
    age(tmp_path, 120)
    await notary.collection(GUN, pin(coll))
    # The upstream serves the older collection again: refused against the kept copy.
    upstream.files[GUN] = old
    age(tmp_path, 120)
    with pytest.raises(VerifyError, match=r"rollback|older"):
        await notary.collection(GUN, pin(coll))
    # Another root for the GUN: never trusted on first use when the rule pins.
    stranger = Collection(GUN)
    mirror = NotaryMirror(MirrorNames("hub", "library"), PREFIX, upstream, 60.0, "http://up")
    other = MirrorNotary([mirror], tmp_path / "fresh")
    upstream.files[GUN] = stranger.files(1, {"v1": target("one")})
    with pytest.raises(VerifyError, match="not among the keys pinned"):
        await other.collection(GUN, pin(coll))


async def test_notary_rule_on_a_mirrored_repository_reads_the_upstream_gun(
    tmp_path: Path,
) -> None:
    notary, _, coll = world(tmp_path)
    root_id = canonical_key_id(coll.root_key.public)

    async def nothing(*_: object) -> None:
        return None

    class NoLocalTrust:
        async def get(self, gun: str, role: str) -> bytes | None:
            raise AssertionError(f"our own trust store read for {gun}")

    ctx = PolicyContext(nothing, nothing, NoLocalTrust())
    ctx.mirrored_trust = notary
    rules = [{"name": "n", "repositories": ["hub/*"], "require": {"kind": "notary",
              "root_keys": [root_id], "gun_prefix": "local:5000/"}}]  # fmt: skip
    check = build_policy(rules, ctx).rules[0].check

    def record(seed: str) -> ManifestRecord:
        content = f"manifest {seed}".encode()
        digest = Digest("sha256", hashlib.sha256(content).hexdigest())
        return ManifestRecord("hub/app", digest, "application/json", len(content), content)

    ok = await check.verify("hub/app", record("one"), "v1")
    assert ok.ok, ok.reason
    moved = await check.verify("hub/app", record("other"), "v1")
    assert not moved.ok and f"signed in {GUN}" in moved.reason
    by_digest = await check.verify("hub/app", record("one"), None)
    assert by_digest.ok, by_digest.reason


def test_trust_server_clients_only_for_notary_rules() -> None:
    def settings(require: dict[str, object]) -> Settings:
        rule = {"name": "r", "repositories": ["hub/*"], "require": require}
        return Settings(
            mirrors=[MirrorSettings(prefix="hub", upstream="http://a")],
            policy={"rules": [rule]},  # type: ignore[arg-type]
        )

    assert not uses_notary(settings({"kind": "cosign", "keys": ["k.pub"]}))
    assert uses_notary(settings({"kind": "notary"}))
    assert uses_notary(settings({"kind": "any-of", "of": [{"kind": "cosign"}, {"kind": "notary"}]}))
