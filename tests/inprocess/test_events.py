"""Durable webhooks, in-process app + a real HTTP receiver (tests/events_receiver.py).

The receiver is down while images are pushed and the app restarts before it comes back: every
event still arrives, in Distribution's envelope, signed with the endpoint's secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.events_receiver import Receiver, check_distribution_shape, signature_ok
from tests.images import OCI_MANIFEST, sha256
from tests.inprocess.conftest import make_settings, serve
from tests.inprocess.helpers import make_image, push_blob, push_image
from tests.signatures.gpg import atomic_payload, make_key, stop_agent
from trustyard.config import Settings
from trustyard.wiring import open_database

FAST = {
    "poll_interval_seconds": 0.05,
    "backoff_initial_seconds": 0.05,
    "backoff_max_seconds": 0.2,
}


def with_events(settings: Settings, *endpoints: dict[str, Any]) -> Settings:
    values = settings.model_dump()
    values["events"] = {**FAST, "endpoints": list(endpoints)}
    return make_settings(settings.data_dir, **{k: v for k, v in values.items() if k != "data_dir"})


async def outbox(settings: Settings) -> list[Any]:
    db = await open_database(settings.database_path)
    try:
        return await db.events.list(None, 1000)
    finally:
        await db.close()


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", "events", *args, "--data-dir", str(settings.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
    )


async def test_receiver_down_during_pushes_gets_every_event_after_restart(
    settings: Settings,
) -> None:
    receiver = Receiver()  # not listening yet
    settings = with_events(settings, {"name": "hook", "url": receiver.url, "secret": "s3cret"})
    image = make_image("down")
    async with serve(settings) as c:
        digest = await push_image(c, "team/app", image, "v1")
        await asyncio.sleep(0.5)  # the deliverer tries, fails, backs off
    rows = await outbox(settings)
    assert {r.state for r in rows} == {"pending"}
    assert any(r.attempts > 0 and r.last_error for r in rows)
    receiver.start()
    try:
        async with serve(settings):  # a restart: the outbox is all that carried the events
            events = await asyncio.to_thread(receiver.wait_for, lambda e: len(e) >= 3)
            await asyncio.sleep(0.3)
    finally:
        receiver.stop()
    events = receiver.events()
    assert len(events) == 3 and len({e["id"] for e in events}) == 3  # each once
    for event in events:
        check_distribution_shape(event)
        assert event["action"] == "push" and event["target"]["repository"] == "team/app"
    manifest = next(e for e in events if e["target"]["mediaType"] == OCI_MANIFEST)
    assert manifest["target"]["digest"] == digest and manifest["target"]["tag"] == "v1"
    assert manifest["target"]["length"] == manifest["target"]["size"] == len(image.manifest)
    assert manifest["target"]["url"] == f"http://registry.test/v2/team/app/manifests/{digest}"
    assert {d["digest"] for d in manifest["target"]["references"]} == {
        sha256(b) for b in image.blobs
    }
    assert manifest["request"]["method"] == "PUT"
    assert manifest["request"]["host"] == "registry.test"
    blobs = {e["target"]["digest"] for e in events if e is not manifest}
    assert blobs == {sha256(b) for b in image.blobs}
    for headers, body in receiver.posts:
        assert headers["content-type"] == "application/vnd.docker.distribution.events.v1+json"
        assert signature_ok("s3cret", headers, body)
        assert not signature_ok("other", headers, body)
    assert {r.state for r in await outbox(settings)} == {"delivered"}


async def test_filters_actions_repositories_media_types_and_opt_in_pulls(
    settings: Settings,
) -> None:
    prod, everything = Receiver().start(), Receiver().start()
    settings = with_events(
        settings,
        {
            "name": "prod-manifests",
            "url": prod.url,
            "actions": ["push", "tag-moved"],
            "repositories": ["prod/*"],
            "media_types": [OCI_MANIFEST],
        },
        {"name": "all", "url": everything.url, "pulls": True},
    )
    try:
        async with serve(settings) as c:
            first = await push_image(c, "prod/app", make_image("a"), "latest")
            await push_image(c, "dev/app", make_image("b"), "latest")
            moved = await push_image(c, "prod/app", make_image("c"), "latest")
            assert (await c.get("/v2/dev/app/manifests/latest")).status_code == 200
            assert (await c.delete("/v2/dev/app/manifests/latest")).status_code == 202
            await asyncio.to_thread(everything.wait_for, lambda e: len(e) >= 12)
            await asyncio.to_thread(prod.wait_for, lambda e: len(e) >= 3)
            await asyncio.sleep(0.3)
    finally:
        prod.stop()
        everything.stop()
    got = [(e["action"], e["target"]["repository"]) for e in prod.events()]
    assert sorted(got) == [("push", "prod/app"), ("push", "prod/app"), ("tag-moved", "prod/app")]
    tag_moved = next(e for e in prod.events() if e["action"] == "tag-moved")
    assert tag_moved["target"]["digest"] == moved
    assert tag_moved["target"]["previousDigest"] == first
    check_distribution_shape(tag_moved)
    actions = sorted(e["action"] for e in everything.events())
    # 3 images x (2 blob pushes + 1 manifest push), one tag move, one pull, one delete
    assert actions == ["delete"] + ["pull"] + ["push"] * 9 + ["tag-moved"]
    pull = next(e for e in everything.events() if e["action"] == "pull")
    check_distribution_shape(pull)
    assert pull["target"]["tag"] == "latest" and pull["request"]["method"] == "GET"
    delete = next(e for e in everything.events() if e["action"] == "delete")
    check_distribution_shape(delete)
    assert delete["target"] == {"repository": "dev/app", "tag": "latest"}


async def test_dead_letter_after_the_limit_and_cli_retry_requeues(
    settings: Settings, tmp_path: Path
) -> None:
    receiver = Receiver(status=500).start()
    settings = with_events(settings, {"name": "flaky", "url": receiver.url, "max_attempts": 3})
    try:
        async with serve(settings) as c:
            await push_image(c, "r", make_image("dead", n_layers=0), "v1")

            def all_dead() -> bool:
                rows = asyncio.run(outbox(settings))
                return bool(rows) and all(r.state == "dead" for r in rows)

            for _ in range(200):
                if await asyncio.to_thread(all_dead):
                    break
                await asyncio.sleep(0.05)
            rows = await outbox(settings)
            assert rows and all(r.state == "dead" and r.attempts == 3 for r in rows)
            assert all(r.last_error == "HTTP 500: ok" for r in rows)
            posts = len(receiver.posts)
            tries: dict[str, int] = {}
            for event in receiver.events():
                tries[event["id"]] = tries.get(event["id"], 0) + 1
            assert sorted(tries.values()) == [3, 3]  # each event: max_attempts POSTs
            await asyncio.sleep(0.3)
            assert len(receiver.posts) == posts  # dead rows are not sent again

            listed = await asyncio.to_thread(cli, settings, "list", "--state", "dead", "--json")
            assert listed.returncode == 0, listed.stderr
            report = json.loads(listed.stdout)
            assert report["counts"]["dead"] == 2
            assert {e["event"]["action"] for e in report["events"]} == {"push"}

            receiver.status = 200
            retried = await asyncio.to_thread(cli, settings, "retry", "--all", "--json")
            assert retried.returncode == 0, retried.stderr
            assert json.loads(retried.stdout) == {"requeued": 2}
            await asyncio.to_thread(receiver.wait_for, lambda e: len(e) >= 8)
            await asyncio.sleep(0.3)
    finally:
        receiver.stop()
    assert {r.state for r in await outbox(settings)} == {"delivered"}
    purged = await asyncio.to_thread(cli, settings, "purge", "--json")
    assert json.loads(purged.stdout) == {"purged": 2, "states": ["delivered"]}
    bad = await asyncio.to_thread(cli, settings, "retry")
    assert bad.returncode == 2 and "--all" in bad.stderr
    bad = await asyncio.to_thread(cli, settings, "list", "--state", "lost")
    assert bad.returncode == 2 and "pending, delivered, dead" in bad.stderr


async def test_signature_added_event(settings: Settings, tmp_path: Path) -> None:
    key = make_key(tmp_path / "gpg", "events")
    receiver = Receiver().start()
    settings = with_events(
        settings, {"name": "sigs", "url": receiver.url, "actions": ["signature-added"]}
    )
    try:
        async with serve(settings) as c:
            digest = await push_image(c, "signed/app", make_image("sig"), "v1")
            body = {
                "schemaVersion": 2,
                "type": "atomic",
                "name": f"{digest}@sig1",
                "content": base64.b64encode(
                    key.sign(atomic_payload("registry.test/signed/app:v1", digest))
                ).decode(),
            }
            url = f"/extensions/v2/signed/app/signatures/{digest}"
            r = await c.put(url, json=body)
            assert r.status_code == 201, r.text
            assert (await c.put(url, json=body)).status_code == 201  # again: nothing new
            events = await asyncio.to_thread(receiver.wait_for, lambda e: len(e) >= 1)
            await asyncio.sleep(0.3)
    finally:
        receiver.stop()
        stop_agent(key)
    events = receiver.events()
    assert len(events) == 1
    check_distribution_shape(events[0])
    assert events[0]["action"] == "signature-added"
    assert events[0]["target"]["digest"] == digest
    assert events[0]["target"]["repository"] == "signed/app"


async def test_policy_denied_event(settings: Settings) -> None:
    receiver = Receiver().start()
    rule = {
        "name": "prod-signed",
        "repositories": ["prod/*"],
        "require": {"kind": "notary", "gun_prefix": "registry.test/"},
    }
    settings = with_events(
        settings, {"name": "denials", "url": receiver.url, "actions": ["policy-denied"]}
    )
    settings = make_settings(
        settings.data_dir,
        **{
            **{k: v for k, v in settings.model_dump().items() if k != "data_dir"},
            "policy": {"rules": [rule]},
        },
    )
    try:
        async with serve(settings) as c:
            await push_image(c, "prod/app", make_image("unsigned"), "v1")
            r = await c.get("/v2/prod/app/manifests/v1")
            assert r.status_code in (403, 404), r.text
            events = await asyncio.to_thread(receiver.wait_for, lambda e: len(e) >= 1)
    finally:
        receiver.stop()
    check_distribution_shape(events[0])
    assert events[0]["action"] == "policy-denied"
    assert events[0]["target"]["repository"] == "prod/app"
    assert events[0]["target"]["tag"] == "v1" and events[0]["target"]["reason"]


async def test_policy_denial_wins_when_its_event_cannot_be_written(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A denial commits nothing, so its event is best effort: an outbox that fails (the database
    gone read-only, say) is logged, and the client still gets the policy's 403, never a 500."""
    rule = {
        "name": "prod-signed",
        "repositories": ["prod/*"],
        "require": {"kind": "notary", "gun_prefix": "registry.test/"},
    }
    settings = with_events(settings, {"name": "denials", "url": "http://127.0.0.1:9/"})
    settings = make_settings(
        settings.data_dir,
        **{
            **{k: v for k, v in settings.model_dump().items() if k != "data_dir"},
            "policy": {"rules": [rule]},
        },
    )
    async with serve(settings, raise_app_exceptions=False) as c:
        await push_image(c, "prod/app", make_image("unsigned-2"), "v1")
        registry = c._transport.app.state.registry  # type: ignore[attr-defined]
        assert registry.events is not None

        async def refuse(entries: Any) -> None:
            raise RuntimeError("outbox unavailable")

        monkeypatch.setattr(registry.events.outbox, "enqueue", refuse)
        r = await c.get("/v2/prod/app/manifests/v1")
    assert r.status_code == 403, r.text
    assert r.json()["errors"][0]["code"] == "DENIED"
    assert not [e for e in await outbox(settings) if e.action == "policy-denied"]


async def test_mount_and_blob_delete_events(settings: Settings) -> None:
    receiver = Receiver().start()
    settings = with_events(
        settings, {"name": "blobs", "url": receiver.url, "actions": ["mount", "delete"]}
    )
    blob = b"shared layer"
    try:
        async with serve(settings) as c:
            digest = await push_blob(c, "src/app", blob)
            r = await c.post(
                "/v2/dst/app/blobs/uploads/", params={"mount": digest, "from": "src/app"}
            )
            assert r.status_code == 201, r.text
            assert (await c.delete(f"/v2/dst/app/blobs/{digest}")).status_code == 202
            events = await asyncio.to_thread(receiver.wait_for, lambda e: len(e) >= 2)
            await asyncio.sleep(0.3)
    finally:
        receiver.stop()
    events = receiver.events()
    assert [e["action"] for e in events] == ["mount", "delete"]
    for event in events:
        check_distribution_shape(event)
    assert events[0]["target"]["fromRepository"] == "src/app"
    assert events[0]["target"]["repository"] == "dst/app"
    assert events[0]["target"]["size"] == len(blob) and events[0]["target"]["digest"] == digest
    assert events[1]["target"] == {"repository": "dst/app", "digest": digest}


def test_bad_endpoint_settings_are_refused_clearly(tmp_path: Path) -> None:
    from trustyard.config import ConfigError, load_settings

    config = tmp_path / "c.toml"
    for body, words in (
        ('[[events.endpoints]]\nname = "a"\nurl = "ftp://x"\n', "url"),
        ('[[events.endpoints]]\nname = "a"\nurl = "http://x"\nsurl = 1\n', "surl"),
        (
            '[[events.endpoints]]\nname = "a"\nurl = "http://x"\n'
            '[[events.endpoints]]\nname = "a"\nurl = "http://y"\n',
            "own name",
        ),
    ):
        config.write_text(body)
        with pytest.raises(ConfigError) as err:
            load_settings(config)
        assert words in str(err.value)
