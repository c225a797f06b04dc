"""Event building and endpoint filters (registry/events.py), and the envelope and signature
(registry/events_delivery.py): pure logic, no database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

from tests.events_receiver import check_distribution_shape, signature_ok
from trustyard.metadata.events_base import OutboxEntry, OutboxRow
from trustyard.oci.digest import Digest
from trustyard.registry.events import (
    CURRENT_REQUEST,
    DELETE,
    MOUNT,
    PULL,
    PUSH,
    Endpoint,
    EventRecorder,
    RequestInfo,
)
from trustyard.registry.events_delivery import Backoff, envelope, sign


class _NoStore:
    async def enqueue(self, entries: Sequence[OutboxEntry]) -> None:
        raise AssertionError("not used here")


def recorder(*endpoints: Endpoint) -> EventRecorder:
    return EventRecorder(endpoints, "reg.example:5000", _NoStore())  # type: ignore[arg-type]


D = Digest.of(b"blob")


def test_filters_actions_globs_media_types_and_pulls() -> None:
    e = Endpoint("e", actions=frozenset({PUSH}), repositories=("prod/*",), media_types=("a/b",))
    assert e.wants(PUSH, "prod/x/y", "a/b")  # `*` crosses `/` (fnmatch)
    assert not e.wants(PUSH, "dev/x", "a/b")
    assert not e.wants(PUSH, "prod/x", "c/d")
    assert not e.wants(DELETE, "prod/x", None)
    assert Endpoint("m", media_types=("a/b",)).wants(DELETE, "r", None)  # no type: passes
    assert not Endpoint("all").wants(PULL, "r", "a/b")  # pulls are opt-in
    assert Endpoint("pulls", pulls=True).wants(PULL, "r", "a/b")
    assert not Endpoint("p", actions=frozenset({PUSH}), pulls=True).wants(PULL, "r", None)


def test_event_fields_follow_distribution_and_request_context() -> None:
    rec = recorder(Endpoint("a"), Endpoint("b", repositories=("other",)))
    assert recorder(Endpoint("a")).pulls is False
    outside = rec.blob(MOUNT, "r", D, 4, source="src")
    assert [o.endpoint for o in outside] == ["a"]
    event = json.loads(outside[0].payload)
    check_distribution_shape(event)
    assert event["request"] == {"id": "", "method": "", "useragent": ""}  # the CLI: no request
    assert event["actor"] == {}
    assert event["target"]["fromRepository"] == "src"
    assert event["target"]["url"] == f"http://reg.example:5000/v2/r/blobs/{D}"
    info = RequestInfo("rid", "10.0.0.1:3333", "h:1", "POST", "ua/1", "https", lambda: "alice")
    token = CURRENT_REQUEST.set(info)
    try:
        event = json.loads(rec.deleted("r", None, "v1")[0].payload)
    finally:
        CURRENT_REQUEST.reset(token)
    check_distribution_shape(event)
    assert event["request"] == {
        "id": "rid",
        "addr": "10.0.0.1:3333",
        "host": "h:1",
        "method": "POST",
        "useragent": "ua/1",
    }
    assert event["actor"] == {"name": "alice"}
    assert event["target"] == {"repository": "r", "tag": "v1"}
    denied = json.loads(rec.policy_denied("r", str(D), "unsigned")[0].payload)
    assert denied["action"] == "policy-denied"
    assert denied["target"] == {"repository": "r", "digest": str(D), "reason": "unsigned"}


def test_envelope_is_the_stored_events_and_the_signature_is_hmac_sha256() -> None:
    rows = [
        OutboxRow(i, f"e{i}", "a", "push", "r", f'{{"id":"e{i}"}}', "pending", 0, 0.0, 0.0, None)
        for i in range(2)
    ]
    body = envelope(rows)
    assert json.loads(body) == {"events": [{"id": "e0"}, {"id": "e1"}]}
    assert signature_ok("k", {"x-trustyard-signature": sign("k", body)}, body)
    assert not signature_ok("k", {"x-trustyard-signature": sign("k", body + b" ")}, body)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    b = Backoff(2.0, 60.0)
    assert 1.8 <= b.delay(1) <= 2.2
    assert 7.2 <= b.delay(3) <= 8.8
    assert 54 <= b.delay(30) <= 66
    assert 54 <= b.delay(10_000) <= 66


class _SlowStore:
    """Counts transactions; each takes a little while, as a real commit does."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[OutboxEntry]] = []
        self.fail = fail

    async def enqueue(self, entries: Sequence[OutboxEntry]) -> None:
        await asyncio.sleep(0.01)
        if self.fail:
            raise OSError("database is down")
        self.batches.append(list(entries))


async def test_grouped_records_share_transactions_and_report_failures() -> None:
    store = _SlowStore()
    rec = EventRecorder((Endpoint("p", pulls=True),), "h:1", store)  # type: ignore[arg-type]
    await asyncio.gather(*(rec.record_grouped(rec.blob(PULL, "r", D, 1)) for _ in range(50)))
    assert sum(len(b) for b in store.batches) == 50
    assert len(store.batches) <= 3  # the first alone, then everyone who queued meanwhile
    failing = EventRecorder((Endpoint("p", pulls=True),), "h:1", _SlowStore(fail=True))  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(failing.record_grouped(failing.blob(PULL, "r", D, 1)) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, OSError) for r in results)
    # A caller that goes away does not take the batch with it.
    waiter = asyncio.ensure_future(rec.record_grouped(rec.blob(PULL, "r", D, 1)))
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.sleep(0.05)
    assert sum(len(b) for b in store.batches) == 51
