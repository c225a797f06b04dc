"""The outbox rows of an event whose change a route's use case writes itself (trust publishes,
simple signatures): built before the change and handed to it, so they commit in the change's
transaction (none when webhooks are off)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from trustyard.metadata.events_base import OutboxEntry
from trustyard.registry.events import EventRecorder


def event_rows(
    request: Request, build: Callable[[EventRecorder], list[OutboxEntry]]
) -> list[OutboxEntry]:
    registry = getattr(request.app.state, "registry", None)
    events: EventRecorder | None = getattr(registry, "events", None)
    return build(events) if events is not None else []
