"""The figures issue 21 asks of /metrics beyond requests: cache lookups, policy decisions by
rule and outcome, trust publishes, the maintenance timers and the database pools, each read
back from the exposition text after the action that counts it (deltas: the in-process
registry is shared by the tests of this process)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.images import sha256
from tests.inprocess.conftest import fresh_data_dir, make_settings, serve
from tests.inprocess.helpers import make_image, push_image
from tests.inprocess.test_operations import sample
from tests.trust.helpers import GUN, Repo
from tests.trust.test_server import parts
from tests.trust_client.test_policy_audit import Fixed
from trustyard.registry.policy import KINDS, register_kind


@pytest.fixture
def fixed_kind() -> Iterator[None]:
    register_kind("fixed", Fixed)
    yield
    del KINDS["fixed"]


async def scrape(c: httpx.AsyncClient) -> str:
    r = await c.get("/metrics")
    assert r.status_code == 200
    return r.text


async def test_cache_policy_and_trust_figures(
    tmp_path: Path, migrated_database: Path, fixed_kind: None
) -> None:
    rules = [
        {"name": "deny", "repositories": ["deny/*"], "require": {"kind": "fixed"}},
        {"name": "warn", "repositories": ["warn/*"], "mode": "warn", "require": {"kind": "fixed"}},
        {"name": "allow", "repositories": ["ok/*"], "require": {"kind": "fixed", "ok": True}},
    ]
    settings = make_settings(
        fresh_data_dir(tmp_path / "data", migrated_database), policy={"rules": rules}
    )
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    async with serve(settings) as c:
        before = await scrape(c)
        for repo in ("deny/app", "warn/app", "ok/app"):
            await push_image(c, repo, make_image(repo), "v1")
        assert (await c.get("/v2/deny/app/manifests/v1", headers=accept)).status_code == 403
        assert (await c.get("/v2/warn/app/manifests/v1", headers=accept)).status_code == 200
        for _ in range(2):  # the first lookup misses the cache, the second hits it
            assert (await c.get("/v2/ok/app/manifests/v1", headers=accept)).status_code == 200

        base = f"/v2/{GUN}/_trust/tuf"
        key = (await c.get(f"{base}/timestamp.key")).json()
        repo = Repo()
        files = {"root": repo.root(key), "targets": repo.targets({"v1": b"one"})}
        files["snapshot"] = repo.snapshot(files)
        assert (await c.post(f"{base}/", files=parts(files))).status_code == 200
        again = await c.post(f"{base}/", files=parts(files))  # same versions: refused
        assert again.status_code == 400, again.text
        after = await scrape(c)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    decisions = "trustyard_policy_decisions_total"
    assert delta(decisions, rule="deny", action="pull", outcome="denied") == 1
    assert delta(decisions, rule="warn", action="pull", outcome="warned") == 1
    assert delta(decisions, rule="allow", action="pull", outcome="allowed") == 2
    lookups = "trustyard_cache_lookups_total"
    assert delta(lookups, cache="manifest", result="hit") >= 1
    assert delta(lookups, cache="manifest", result="miss") >= 3
    assert delta("trustyard_trust_publishes_total", outcome="success") == 1
    assert delta("trustyard_trust_publishes_total", outcome="refused") == 1
    # bounded labels: no repository name in any label value
    assert "ok/app" not in after and "deny/app" not in after and GUN not in after
    # the pools of this worker, refreshed at the scrape
    assert sample(after, "trustyard_db_pool_size", pool="reader") >= 1
    assert sample(after, "trustyard_db_pool_size", pool="writer") >= 1
    assert "trustyard_db_connections_in_use" in after


async def test_maintenance_timers_are_counted(tmp_path: Path, migrated_database: Path) -> None:
    settings = make_settings(
        fresh_data_dir(tmp_path / "data", migrated_database),
        scrub_interval_seconds=0.2,
        upload_purge_interval_seconds=0.2,
        lifecycle={
            "retention_interval_seconds": 0.2,
            "retention": [{"repository": "ret/*", "tags": ["t*"], "keep_last": 1}],
        },
    )
    runs = "trustyard_maintenance_runs_total"
    async with serve(settings) as c:
        before = await scrape(c)
        for i in range(3):
            await push_image(c, "ret/app", make_image(f"ret-{i}"), f"t{i}")
        deadline = time.monotonic() + 20
        while True:
            after = await scrape(c)
            tags = sample(
                after, "trustyard_maintenance_objects_total", task="retention", kind="tags_deleted"
            )
            done = all(
                sample(after, runs, task=t, outcome="success")
                > sample(before, runs, task=t, outcome="success")
                for t in ("scrub", "retention", "upload_purge")
            )
            if (
                done
                and tags
                - sample(
                    before,
                    "trustyard_maintenance_objects_total",
                    task="retention",
                    kind="tags_deleted",
                )
                >= 2
            ):
                break
            assert time.monotonic() < deadline, after
            await asyncio.sleep(0.1)
        listed = (await c.get("/v2/ret/app/tags/list")).json()["tags"]
    assert listed == ["t2"]
    objects = "trustyard_maintenance_objects_total"
    assert sample(after, objects, task="scrub", kind="blobs_checked") >= 6
    assert sample(after, "trustyard_maintenance_bytes_total", task="scrub") > 0
    assert sample(after, "trustyard_maintenance_duration_seconds_count", task="scrub") >= 1


async def test_scheduled_gc_collects_what_retention_left_and_is_counted(
    tmp_path: Path, migrated_database: Path
) -> None:
    """Retention deletes tags; the server's own GC timer then frees their manifests and blobs
    (grace 0), and /metrics shows the GC pass with what it freed."""
    settings = make_settings(
        fresh_data_dir(tmp_path / "data", migrated_database),
        gc_interval_seconds=0.2,
        gc_grace_seconds=0,
        lifecycle={
            "retention_interval_seconds": 0.2,
            "retention": [{"repository": "gc/*", "tags": ["t*"], "keep_last": 1}],
        },
    )
    objects = "trustyard_maintenance_objects_total"
    async with serve(settings) as c:
        images = [make_image(f"gc-{i}") for i in range(3)]
        for i, image in enumerate(images):
            await push_image(c, "gc/app", image, f"t{i}")
        gone = sha256(images[0].manifest)
        deadline = time.monotonic() + 30
        while True:
            after = await scrape(c)
            status = (await c.head(f"/v2/gc/app/manifests/{gone}")).status_code
            if status == 404 and sample(after, objects, task="gc", kind="manifests_deleted") >= 2:
                break
            assert time.monotonic() < deadline, (status, after)
            await asyncio.sleep(0.1)
        assert (
            await c.get(f"/v2/gc/app/manifests/{sha256(images[2].manifest)}")
        ).status_code == 200
    runs = "trustyard_maintenance_runs_total"
    assert sample(after, runs, task="gc", outcome="success") >= 1
    assert sample(after, objects, task="gc", kind="blobs_deleted") >= 2
    assert sample(after, "trustyard_maintenance_bytes_total", task="gc") > 0
