"""Recording an event from a route whose use case has no outbox of its own (trust publishes,
simple signatures): written just after the change commits, so a crash in between loses it."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from trustyard.metadata.events_base import OutboxEntry
from trustyard.registry.events import EventRecorder


async def record_event(
    request: Request, build: Callable[[EventRecorder], list[OutboxEntry]]
) -> None:
    registry = getattr(request.app.state, "registry", None)
    events: EventRecorder | None = getattr(registry, "events", None)
    if events is not None:
        await events.record(build(events))
