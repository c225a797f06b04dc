"""Prometheus figures beyond the request counters (issue 21): the use cases' `Telemetry` port
(cache lookups, policy decisions), trust publishes, the server's maintenance timers (scrub,
retention, upload purge) and the database pools.

Made lazily, in the worker, like http/metrics.py's instruments (prometheus-client must be first
imported after `trustyard serve` set PROMETHEUS_MULTIPROC_DIR). Every label is bounded: cache
and task names are ours, `rule` is a configured policy rule's name, outcomes are closed sets.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

T = TypeVar("T")


@dataclass(frozen=True)
class TelemetryInstruments:
    cache_lookups: Counter
    policy_decisions: Counter
    trust_publishes: Counter
    maintenance_runs: Counter
    maintenance_duration: Histogram
    maintenance_objects: Counter
    maintenance_bytes: Counter
    db_in_use: Gauge
    db_size: Gauge


@cache
def telemetry_instruments() -> TelemetryInstruments:
    from prometheus_client import Counter, Gauge, Histogram

    return TelemetryInstruments(
        cache_lookups=Counter(
            "trustyard_cache_lookups_total",
            "Lookups in the registry's caches, by cache and result (hit, miss).",
            ["cache", "result"],
        ),
        policy_decisions=Counter(
            "trustyard_policy_decisions_total",
            "Signature policy decisions by configured rule, action (pull, push) and outcome "
            "(allowed, denied, warned: denied by a rule that does not enforce).",
            ["rule", "action", "outcome"],
        ),
        trust_publishes=Counter(
            "trustyard_trust_publishes_total",
            "Notary publishes to collections, by outcome (success, refused: invalid or stale "
            "metadata, failed: an error of ours).",
            ["outcome"],
        ),
        maintenance_runs=Counter(
            "trustyard_maintenance_runs_total",
            "Runs of the server's maintenance timers, by task (scrub, retention, upload_purge) "
            "and outcome (success, damage: scrub found damage, skipped: another worker or "
            "replica holds the lock, failed).",
            ["task", "outcome"],
        ),
        maintenance_duration=Histogram(
            "trustyard_maintenance_duration_seconds",
            "How long a maintenance run took, by task.",
            ["task"],
            buckets=(0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 4 * 3600, 12 * 3600),
        ),
        maintenance_objects=Counter(
            "trustyard_maintenance_objects_total",
            "What maintenance runs did, by task and kind (tags_deleted, uploads_expired, "
            "blobs_checked, manifests_checked, damaged).",
            ["task", "kind"],
        ),
        maintenance_bytes=Counter(
            "trustyard_maintenance_bytes_total",
            "Bytes maintenance runs read (scrub: blob bytes re-hashed), by task.",
            ["task"],
        ),
        db_in_use=Gauge(
            "trustyard_db_connections_in_use",
            "Database connections checked out of the pool now, by pool (reader, writer).",
            ["pool"],
            multiprocess_mode="livesum",
        ),
        db_size=Gauge(
            "trustyard_db_pool_size",
            "Connections the pool keeps open (idle or in use), by pool.",
            ["pool"],
            multiprocess_mode="livesum",
        ),
    )


class PrometheusTelemetry:
    """`trustyard.telemetry.Telemetry` over prometheus-client."""

    def __init__(self) -> None:
        # A manifest GET counts one lookup: its labelled child is kept, not looked up each time.
        self._lookups: dict[tuple[str, str], Counter] = {}

    def cache_lookup(self, cache: str, result: str) -> None:
        child = self._lookups.get((cache, result))
        if child is None:
            child = telemetry_instruments().cache_lookups.labels(cache, result)
            self._lookups[(cache, result)] = child
        child.inc()

    def policy_decision(self, rule: str, action: str, outcome: str) -> None:
        telemetry_instruments().policy_decisions.labels(rule, action, outcome).inc()


def trust_publish(outcome: str) -> None:
    telemetry_instruments().trust_publishes.labels(outcome).inc()


async def maintenance(
    task: str, run: Callable[[], Awaitable[T | None]], figures: Callable[[Any], Mapping[str, int]]
) -> T | None:
    """Run one maintenance pass and count it: `run` returns None when it skipped its turn (the
    lock was taken), else a report that `figures` turns into objects by kind (`bytes`: bytes)."""
    m = telemetry_instruments()
    started = time.perf_counter()
    try:
        report = await run()
    except Exception:
        m.maintenance_runs.labels(task, "failed").inc()
        m.maintenance_duration.labels(task).observe(time.perf_counter() - started)
        raise
    if report is None:
        m.maintenance_runs.labels(task, "skipped").inc()
        return None
    m.maintenance_duration.labels(task).observe(time.perf_counter() - started)
    found = dict(figures(report))
    m.maintenance_runs.labels(task, "damage" if found.get("damaged") else "success").inc()
    if n := found.pop("bytes", 0):
        m.maintenance_bytes.labels(task).inc(n)
    for kind, n in found.items():
        if n:
            m.maintenance_objects.labels(task, kind).inc(n)
    return report


def pool_gauges(use: Mapping[str, tuple[int, int]]) -> None:
    """Set the pool gauges from (in use, size) per pool."""
    m = telemetry_instruments()
    for pool, (in_use, size) in use.items():
        m.db_in_use.labels(pool).set(in_use)
        m.db_size.labels(pool).set(size)
