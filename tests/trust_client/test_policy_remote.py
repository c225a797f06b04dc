"""The registry's `notary` policy with `server = URL` against a malicious Notary server:
freeze (timestamp/snapshot withheld), rollback after a newer collection verified, endless and
slow answers. Each is a denied decision with a reason a person understands."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator

import pytest

from tests.trust_client.evil import Collection, EvilServer, Stream, endless
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.registry.policy import Decision, NotaryCheck, PolicyContext
from trustyard.trust.client import remote as client_remote

PREFIX = "registry.example/"
REPO = "team/app"
GUN = PREFIX + REPO


async def read_blob(digest: Digest, limit: int) -> bytes | None:
    return None


async def get_manifest(repository: str, digest: Digest) -> ManifestRecord | None:
    return None


def record(seed: str) -> ManifestRecord:
    body = f'{{"schemaVersion":2,"seed":"{seed}"}}'.encode()
    digest = Digest("sha256", hashlib.sha256(body).hexdigest())
    return ManifestRecord(
        REPO, digest, "application/vnd.oci.image.manifest.v1+json", len(body), body
    )


def signs(rec: ManifestRecord) -> dict[str, object]:
    return {"hashes": {"sha256": base64.b64encode(bytes.fromhex(rec.digest.hex)).decode()},
            "length": rec.size}  # fmt: skip


@pytest.fixture
def srv() -> Iterator[EvilServer]:
    with EvilServer() as s:
        yield s


def check(srv: EvilServer) -> NotaryCheck:
    spec = {"kind": "notary", "server": srv.url, "gun_prefix": PREFIX}
    return NotaryCheck(spec, PolicyContext(read_blob, get_manifest))


async def test_remote_notary_policy_requires_timestamp_and_snapshot(srv: EvilServer) -> None:
    one = record("one")
    coll = Collection(GUN)
    srv.serve(GUN, coll.files(1, {"v1": signs(one)}))
    assert (await check(srv).verify(REPO, one, "v1")).ok
    srv.withhold(GUN, "timestamp")
    srv.withhold(GUN, "snapshot")
    decision = await check(srv).verify(REPO, one, "v1")
    assert not decision.ok and "has no timestamp metadata" in decision.reason
    srv.serve(GUN, {"timestamp": coll.files(1, {"v1": signs(one)})["timestamp"]})
    decision = await check(srv).verify(REPO, one, "v1")
    assert not decision.ok and "no snapshot metadata" in decision.reason


async def test_remote_notary_policy_refuses_a_rollback(srv: EvilServer) -> None:
    one, two = record("one"), record("two")
    coll = Collection(GUN)
    v1 = coll.files(1, {"v1": signs(one)})
    v2 = coll.files(2, {"v1": signs(two)})
    policy = check(srv)
    srv.serve(GUN, v2)
    assert (await policy.verify(REPO, two, "v1")).ok
    srv.serve(GUN, v1)  # the old collection, which signs the old digest
    decision = await policy.verify(REPO, one, "v1")
    assert not decision.ok and "older than the trusted version 2" in decision.reason
    srv.serve(GUN, {**v1, "timestamp": coll.timestamp(v1["snapshot"], 3)})
    decision = await policy.verify(REPO, one, "v1")
    assert not decision.ok and "snapshot of" in decision.reason and "rollback" in decision.reason
    srv.serve(GUN, coll.files(3, {"v1": signs(two)}))
    assert (await policy.verify(REPO, two, "v1")).ok


async def test_remote_notary_policy_bounds_endless_and_slow_answers(
    srv: EvilServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = record("one")
    path = f"/v2/{GUN}/_trust/tuf/root.json"
    srv.routes[path] = Stream(endless(b"[", 4 << 30))
    decision: Decision = await check(srv).verify(REPO, one, "v1")
    assert not decision.ok
    assert "notary server unreachable" in decision.reason and "byte limit" in decision.reason
    assert srv.sent[path] < 256 << 20
    # an error answer that never ends
    srv.routes[path] = Stream(endless(b"x", 4 << 30), status=503)
    decision = await check(srv).verify(REPO, one, "v1")
    assert not decision.ok and "HTTP 503" in decision.reason

    # a server that trickles a byte at a time: the deadline ends it
    def trickle() -> Iterator[bytes]:
        while True:
            yield b" "
            time.sleep(0.05)

    monkeypatch.setattr(client_remote, "FETCH_DEADLINE", 1.0)
    srv.routes[path] = Stream(trickle)
    start = time.monotonic()
    decision = await check(srv).verify(REPO, one, "v1")
    assert time.monotonic() - start < 10
    assert not decision.ok and "notary server unreachable" in decision.reason
