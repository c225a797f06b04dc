"""The audit recorder: entries queued in memory by the request path, written in batches.

A request only appends to a list (no await, no database round trip); a background task writes
the batch every `flush_interval_seconds` in one transaction, and closing writes what is left.
Pulls are recorded per `audit.pull`: off, all, or one in N (a per-worker counter, so the sample
is exact and cheap). A crash loses at most one interval's entries; the writes the entries
describe are already committed, so nothing half-done becomes visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import structlog

from trustyard.config import AuditSettings
from trustyard.metadata.audit_base import (
    ANONYMOUS,
    AuditEntry,
    AuditStore,
    RequestContext,
    current_request,
)

if TYPE_CHECKING:
    from prometheus_client import Counter

log = structlog.get_logger("trustyard.audit")


@dataclass(frozen=True)
class AuditMetrics:
    entries: Counter
    write_failures: Counter


@cache
def audit_metrics() -> AuditMetrics:
    """Made on first use, in the worker (prometheus-client must be imported after `trustyard
    serve` set PROMETHEUS_MULTIPROC_DIR; http/metrics.py says why). Labels are the closed sets
    of actions and outcomes: logins by outcome are the auth successes, failures and lockouts."""
    from prometheus_client import Counter

    return AuditMetrics(
        entries=Counter(
            "trustyard_audit_entries_total",
            "Audit entries recorded, by action and outcome (login: auth successes, failures, "
            "rate_limited lockouts).",
            ["action", "outcome"],
        ),
        write_failures=Counter(
            "trustyard_audit_write_failures_total",
            "Audit entries lost because their batch could not be written.",
        ),
    )


# A burst beyond this is written at once instead of waiting for the timer.
FLUSH_AT = 500

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Auditor:
    """Implements `metadata.audit_base.AuditLog` over an `AuditStore`."""

    def __init__(self, store: AuditStore, settings: AuditSettings) -> None:
        self.store = store
        self.settings = settings
        kind, _, n = settings.pull.partition(":")
        self._pull_every = 0 if kind == "off" else 1 if kind == "all" else int(n)
        self._pulls = 0
        self._proxies: tuple[Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in settings.trusted_proxies
        )
        self._pending: list[AuditEntry] = []
        self._children: dict[tuple[str, str], Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None

    # -- the request side ------------------------------------------------------------------------
    def client_address(self, peer: str | None, forwarded_for: str | None) -> str:
        """The client: the TCP peer, or, when the peer is a trusted proxy, the right-most
        X-Forwarded-For address that is not itself a trusted proxy (the left-most entries are
        whatever the client claimed and prove nothing)."""
        address = peer or ""
        if not forwarded_for or not self._proxies or not self._trusted(address):
            return address
        for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
            if not hop:
                continue
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return address  # garbled: believe nothing beyond the proxy
            address = hop
            if not self._trusted(hop):
                break
        return address

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._proxies)

    def record(
        self,
        action: str,
        *,
        repository: str = "",
        digest: str = "",
        tag: str = "",
        outcome: str = "success",
        detail: Mapping[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        ctx = current_request.get() or RequestContext()
        self._counter(action, outcome).inc()
        self._pending.append(
            AuditEntry(
                action,
                time.time(),
                actor=actor if actor is not None else ctx.actor or ANONYMOUS,
                client=ctx.client,
                repository=repository,
                digest=digest,
                tag=tag,
                outcome=outcome,
                detail=detail or {},
            )
        )
        if len(self._pending) >= FLUSH_AT and self._task is not None:
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.get_running_loop().create_task(self.flush())

    def _counter(self, action: str, outcome: str) -> Any:
        """The metric child of (action, outcome), looked up once (`labels` takes a lock)."""
        child = self._children.get((action, outcome))
        if child is None:
            child = self._children[action, outcome] = audit_metrics().entries.labels(
                action, outcome
            )
        return child

    def pulled(self, repository: str, digest: str, tag: str) -> None:
        if self._pull_every == 0:
            return
        self._pulls += 1
        if self._pulls % self._pull_every == 0:
            detail = {"sample": self._pull_every} if self._pull_every > 1 else None
            self.record("pull", repository=repository, digest=digest, tag=tag, detail=detail)

    # -- the writer side -------------------------------------------------------------------------
    async def flush(self) -> None:
        """Write what is queued, in one transaction; on failure the batch is logged and dropped
        (the audit log never blocks or fails the registry)."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.store.append(batch)
        except asyncio.CancelledError:  # shutting down mid-write: `close` writes it again
            self._pending[:0] = batch
            raise
        except Exception:
            log.exception("audit_write_failed", entries=len(batch))
            audit_metrics().write_failures.inc(len(batch))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_seconds)
            await self.flush()

    def start(self) -> None:
        """Start the periodic writer (the server's lifespan; the CLI writes with `flush`)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self.flush()

    async def purge(self) -> int:
        """Delete entries older than `retention_days` (0: keep all)."""
        days = self.settings.retention_days
        if days <= 0:
            return 0
        return await self.store.purge(time.time() - days * 86400)
