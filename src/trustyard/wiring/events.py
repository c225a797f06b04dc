"""Settings -> the event recorder the registry writes with, and the deliverer the server runs."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from trustyard.config import Settings
from trustyard.metadata.events_base import OutboxStore
from trustyard.registry.events import Endpoint, EventRecorder
from trustyard.registry.events_delivery import Backoff, EventDeliverer, Target

if TYPE_CHECKING:  # the poster brings httpx: imported only where endpoints are configured
    from trustyard.remote.webhook import WebhookPoster


def event_recorder(settings: Settings, outbox: OutboxStore) -> EventRecorder:
    endpoints = tuple(
        Endpoint(
            name=e.name,
            actions=frozenset(e.actions),
            repositories=e.repositories,
            media_types=e.media_types,
            pulls=e.pulls,
        )
        for e in settings.events.endpoints
    )
    # Distribution's source.addr: this host and the port it serves on.
    return EventRecorder(endpoints, f"{socket.gethostname()}:{settings.port}", outbox)


def event_deliverer(
    settings: Settings, outbox: OutboxStore
) -> tuple[EventDeliverer, WebhookPoster]:
    """The deliverer, and the HTTP client it posts with (the caller closes it)."""
    from trustyard.remote.webhook import WebhookPoster

    events = settings.events
    targets = [
        Target(
            name=e.name,
            url=e.url,
            secret=e.secret,
            headers=tuple(e.headers.items()),
            timeout=e.timeout_seconds,
            max_attempts=e.max_attempts,
        )
        for e in events.endpoints
    ]
    poster = WebhookPoster()
    deliverer = EventDeliverer(
        outbox,
        targets,
        poster,
        batch_size=events.batch_size,
        backoff=Backoff(events.backoff_initial_seconds, events.backoff_max_seconds),
        keep_delivered_seconds=events.keep_delivered_seconds,
    )
    return deliverer, poster
