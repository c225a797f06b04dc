"""Delivering the outbox: claim due rows under a lease, POST one envelope per endpoint batch,
then mark them delivered, or due again after an exponential back-off, or dead after the
endpoint's attempt limit. At-least-once: a deliverer that dies between the POST and the mark
leaves the lease to expire, and another one sends the batch again."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from trustyard.metadata.events_base import OutboxRow, OutboxStore
from trustyard.registry.events import ENVELOPE_MEDIA_TYPE
from trustyard.remote.errors import RemoteError

SIGNATURE_HEADER = "X-Trustyard-Signature"
PURGE_EVERY = 600.0  # seconds between sweeps of delivered rows past their keep time

# (url, body, headers, timeout): returns on 2xx, raises RemoteError otherwise.
Poster = Callable[[str, bytes, dict[str, str], float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how one endpoint is sent to."""

    name: str
    url: str
    secret: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    max_attempts: int = 12


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 2.0
    maximum: float = 3600.0

    def delay(self, attempts: int) -> float:
        """After the `attempts`-th failure: initial * 2^(attempts-1), capped, +-10% jitter so
        replicas' retries do not arrive in lockstep."""
        base: float = min(self.maximum, self.initial * 2.0 ** min(attempts - 1, 40))
        return base * random.uniform(0.9, 1.1)


@dataclass
class DeliveryReport:
    """Counts of one pass, by (endpoint, outcome); outcome: delivered, failed, dead."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def total(self, outcome: str) -> int:
        return sum(n for (_, o), n in self.counts.items() if o == outcome)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def envelope(rows: Sequence[OutboxRow]) -> bytes:
    """`{"events": [...]}` from the stored event JSON, without parsing it again."""
    return b'{"events":[' + b",".join(r.payload.encode() for r in rows) + b"]}"


class EventDeliverer:
    def __init__(
        self,
        store: OutboxStore,
        targets: Sequence[Target],
        post: Poster,
        *,
        batch_size: int = 50,
        backoff: Backoff | None = None,
        keep_delivered_seconds: float = 7 * 86400.0,
    ) -> None:
        self.store = store
        self.targets = {t.name: t for t in targets}
        self.post = post
        self.batch_size = batch_size
        self.backoff = backoff or Backoff()
        self.keep_delivered_seconds = keep_delivered_seconds
        self.owner = uuid.uuid4().hex
        # Longer than every POST of a pass can take, so no lease ends while it is sent.
        self.lease_seconds = 30.0 + 2 * max((t.timeout for t in targets), default=5.0)
        self._purged_at = 0.0

    async def run_once(self) -> DeliveryReport:
        """One pass: every due row this deliverer could claim, sent and marked."""
        now = time.time()
        report = DeliveryReport()
        limit = self.batch_size * max(1, len(self.targets))
        rows = await self.store.claim(self.owner, now, self.lease_seconds, limit)
        batches: dict[str, list[OutboxRow]] = defaultdict(list)
        for row in rows:
            batches[row.endpoint].append(row)
        jobs = []
        for name, batch in batches.items():
            target = self.targets.get(name)
            if target is None:
                # Left over from an endpoint since removed from the config: kept, not sent.
                error = f"endpoint {name!r} is no longer configured"
                await self.store.failed([r.id for r in batch], self.owner, error, now, dead=True)
                report.counts[(name, "dead")] += len(batch)
                continue
            for i in range(0, len(batch), self.batch_size):
                jobs.append(self._send(target, batch[i : i + self.batch_size], report))
        await asyncio.gather(*jobs)
        if self.keep_delivered_seconds and now - self._purged_at > PURGE_EVERY:
            self._purged_at = now
            await self.store.purge(["delivered"], now - self.keep_delivered_seconds)
        return report

    async def close(self) -> None:
        """Give back the rows this deliverer holds, so a restart need not wait out the lease."""
        await self.store.release(self.owner)

    async def _send(self, target: Target, rows: list[OutboxRow], report: DeliveryReport) -> None:
        body = envelope(rows)
        headers = {**dict(target.headers), "Content-Type": ENVELOPE_MEDIA_TYPE}
        if target.secret:
            headers[SIGNATURE_HEADER] = sign(target.secret, body)
        ids = [r.id for r in rows]
        try:
            await self.post(target.url, body, headers, target.timeout)
        except RemoteError as exc:
            await self._failed(target, rows, str(exc) or type(exc).__name__, report)
            return
        await self.store.delivered(ids, self.owner, time.time())
        report.counts[(target.name, "delivered")] += len(rows)

    async def _failed(
        self, target: Target, rows: list[OutboxRow], error: str, report: DeliveryReport
    ) -> None:
        by_attempts: dict[int, list[int]] = defaultdict(list)
        for row in rows:
            by_attempts[row.attempts + 1].append(row.id)
        now = time.time()
        for attempts, ids in by_attempts.items():
            dead = attempts >= target.max_attempts
            retry_at = now + self.backoff.delay(attempts)
            await self.store.failed(ids, self.owner, error, retry_at, dead=dead)
            report.counts[(target.name, "dead" if dead else "failed")] += len(ids)
