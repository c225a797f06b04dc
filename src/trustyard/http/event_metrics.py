"""Prometheus figures of webhook delivery (made lazily, like http/metrics.py's). The endpoint
label is an endpoint's configured name: bounded by the config, never a repository."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from trustyard.registry.events_delivery import DeliveryReport

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge


@dataclass(frozen=True)
class EventInstruments:
    deliveries: Counter
    backlog: Gauge


@cache
def event_instruments() -> EventInstruments:
    from prometheus_client import Counter, Gauge

    return EventInstruments(
        deliveries=Counter(
            "trustyard_events_total",
            "Webhook event deliveries by endpoint and outcome (delivered, failed: to be retried, "
            "dead: dead-lettered).",
            ["endpoint", "outcome"],
        ),
        backlog=Gauge(
            "trustyard_events_outbox",
            "Rows in the event outbox by state (pending is the backlog).",
            ["state"],
            multiprocess_mode="livemax",
        ),
    )


def count(report: DeliveryReport, states: dict[str, int] | None) -> None:
    """Add a pass's outcomes; set the outbox gauge when `states` were counted this time."""
    m = event_instruments()
    for (endpoint, outcome), n in report.counts.items():
        m.deliveries.labels(endpoint, outcome).inc(n)
    for state, n in (states or {}).items():
        m.backlog.labels(state).set(n)
