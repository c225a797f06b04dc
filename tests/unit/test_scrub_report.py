"""The scrub's pacing (token bucket) and report, as pure logic."""

from __future__ import annotations

import json

import pytest

from trustyard.oci.digest import Digest
from trustyard.registry.scrub import (
    CorruptBlob,
    CorruptManifest,
    MissingReference,
    ScrubReport,
    TokenBucket,
)


class FakeTime:
    """A clock that only moves when the bucket sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_unlimited_never_sleeps() -> None:
    t = FakeTime()
    bucket = TokenBucket(0, clock=t.clock, sleep=t.sleep)
    for _ in range(100):
        await bucket.take(10**9)
    assert t.slept == []


async def test_rate_holds_over_many_chunks() -> None:
    """10 MB at 1 MB/s in 64 KiB chunks takes ~9 s of sleeping (the first second is the
    bucket's initial fill), never faster."""
    t = FakeTime()
    bucket = TokenBucket(1_000_000, clock=t.clock, sleep=t.sleep)
    start = t.now
    sent = 0
    while sent < 10_000_000:
        await bucket.take(65536)
        sent += 65536
    elapsed = t.now - start
    assert sent / 1_000_000 - 1 - 0.1 <= elapsed <= sent / 1_000_000


async def test_chunk_larger_than_the_bucket_waits_its_debt_off() -> None:
    t = FakeTime()
    bucket = TokenBucket(1000, clock=t.clock, sleep=t.sleep)
    await bucket.take(5000)
    assert t.slept == [pytest.approx(4.0)]


async def test_idle_time_refills_at_most_one_second() -> None:
    t = FakeTime()
    bucket = TokenBucket(1000, clock=t.clock, sleep=t.sleep)
    await bucket.take(1000)
    t.now += 3600  # an hour idle: still only one second of burst
    await bucket.take(2000)
    assert t.slept == [pytest.approx(1.0)]


def test_negative_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(-1)


def test_report_ok_and_json() -> None:
    good = ScrubReport(repositories=1, manifests_checked=2, blobs_checked=3, bytes_checked=4)
    assert good.ok and good.to_json()["ok"] is True
    a, b = Digest.of(b"a"), Digest.of(b"b")
    bad = ScrubReport(
        corrupt_blobs=[CorruptBlob(a, b, 1, quarantined=True, unlinked_from=("x/y",))],
        corrupt_manifests=[CorruptManifest("x/y", b, "stored bytes have digest …")],
        missing=[MissingReference("x/y", a, b, "blob")],
    )
    assert not bad.ok
    out = json.loads(json.dumps(bad.to_json()))
    assert out["ok"] is False
    assert out["corrupt_blobs"] == [
        {
            "digest": str(a),
            "actual": str(b),
            "size": 1,
            "quarantined": True,
            "unlinked_from": ["x/y"],
        }
    ]
    assert out["missing"][0]["kind"] == "blob"
    assert out["corrupt_manifests"][0]["repository"] == "x/y"
