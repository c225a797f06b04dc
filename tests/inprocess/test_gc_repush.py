"""GC running in a loop beside a CI-style loop that deletes a multi-arch index, re-pushes its
children by digest and pushes the index again (issue 19): no push or pull may lose a child.

The metadata and GC read a clock that the test moves forward to age what was pushed, instead
of sleeping out the grace period: the rounds take milliseconds, and a loaded machine cannot
stretch the window between a child's push and its index's past the grace period. The clock
runs well behind the real one, so the blob sweeper (which compares real file times with GC's
cutoff) only ever keeps files, never removes one a push just wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from starlette.applications import Starlette

from tests.inprocess.helpers import (
    OCI_INDEX,
    make_image,
    make_index,
    push_blob,
    put_manifest,
    sha256,
)
from trustyard.registry import Registry
from trustyard.registry.gc import collect_garbage

GRACE = 3.0
ROUNDS = 20


class Clock:
    """Stands in for the `time` module of the metadata store and of GC: real time, shifted."""

    def __init__(self) -> None:
        self.offset = -1000.0

    def time(self) -> float:
        return time.time() + self.offset


async def _gc_forever(registry: Registry, passes: list[int], turn: asyncio.Lock) -> None:
    while True:
        async with turn:
            report = await collect_garbage(
                registry.storage,
                registry.metadata,
                grace_seconds=GRACE,
                upload_max_age_seconds=3600,
                sweep_orphans=False,
                changed=registry.changed,
            )
        passes.append(len(report.plan.manifests))
        await asyncio.sleep(0.005)


async def _passes_after(passes: list[int], count: int) -> None:
    """Wait until `count` more GC passes finished (the last one began after this call)."""
    target = len(passes) + count
    while len(passes) < target:
        await asyncio.sleep(0.005)


async def test_repushed_children_survive_gc_between_child_and_index_push(
    app: Starlette, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    monkeypatch.setattr("trustyard.metadata.sql.time", clock)
    monkeypatch.setattr("trustyard.registry.gc.time", clock)
    name = "ci/multiarch"
    images = [make_image("ci", arch=arch) for arch in ("amd64", "arm64")]
    index = make_index(*images)
    passes: list[int] = []
    turn = asyncio.Lock()  # held by the test: no GC pass between delete and re-push
    gc_task = asyncio.create_task(_gc_forever(app.state.registry, passes, turn))
    try:
        for round_ in range(ROUNDS):
            # the children age past the grace period while the index protects them ...
            clock.offset += GRACE * 1.5
            # every other round, the worst case: no GC pass between delete and re-push (else
            # the pass takes the children first, and the re-push creates them afresh)
            async with turn if round_ % 2 else contextlib.nullcontext():
                r = await client.delete(f"/v2/{name}/manifests/{sha256(index)}")
                assert r.status_code in (202, 404), r.text
                # ... so only a refreshed push time keeps them until the index names them again
                for image in images:
                    for blob in image.blobs:
                        await push_blob(client, name, blob)
                    r = await put_manifest(
                        client, name, image.digest, image.manifest, image.media_type
                    )
                    assert r.status_code == 201, r.text
            await _passes_after(passes, 2)  # a whole GC pass between children and index
            r = await put_manifest(client, name, "latest", index, OCI_INDEX)
            assert r.status_code == 201, r.text  # MANIFEST_BLOB_UNKNOWN: a child was collected
            for image in images:
                r = await client.get(
                    f"/v2/{name}/manifests/{image.digest}", headers={"Accept": image.media_type}
                )
                assert r.status_code == 200, r.text  # MANIFEST_UNKNOWN: a child was collected
    finally:
        gc_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gc_task
    assert len(passes) >= 2 * ROUNDS
