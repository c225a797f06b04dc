"""Two replicas' deliverers on one database deliver each event once (real HTTP receiver)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from tests.events_receiver import Receiver
from trustyard.metadata.events_base import OutboxEntry
from trustyard.registry.events_delivery import Backoff, EventDeliverer, Target
from trustyard.remote.webhook import WebhookPoster
from trustyard.wiring import open_database


async def test_two_replicas_deliver_each_event_once(target: Path | str) -> None:
    receiver = Receiver().start()
    one = await open_database(target, create=True)
    two = await open_database(target, create=True)
    posters = [WebhookPoster(), WebhookPoster()]
    try:
        entries = [
            OutboxEntry(f"e{i}", "hook", "push", "r", f'{{"id":"e{i}"}}') for i in range(300)
        ]
        await one.events.enqueue(entries)
        hook = Target("hook", receiver.url)
        replicas = [
            EventDeliverer(db.events, [hook], poster, batch_size=10, backoff=Backoff(0.05, 0.1))
            for db, poster in zip((one, two), posters, strict=True)
        ]

        async def loop(deliverer: EventDeliverer) -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                await deliverer.run_once()
                if (await deliverer.store.counts())["pending"] == 0:
                    return

        await asyncio.gather(*(loop(d) for d in replicas))
        got = Counter(e["id"] for e in receiver.events())
        assert len(got) == 300 and set(got.values()) == {1}
        assert await one.events.counts() == {"pending": 0, "delivered": 300, "dead": 0}
    finally:
        receiver.stop()
        for poster in posters:
            await poster.close()
        await one.close()
        await two.close()
