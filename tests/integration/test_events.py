"""Durable webhooks against a real `trustyard serve` and skopeo: the receiver is down while
skopeo pushes, the server restarts, the receiver comes up, and every event arrives once, in
Distribution's envelope, signed, and counted in /metrics."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.events_receiver import Receiver, check_distribution_shape, signature_ok
from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import OCI_MANIFEST, make_image, sha256, write_layout
from tests.integration.server import ServerProcess

pytestmark = [pytest.mark.needs_skopeo]


def events_env(receiver: Receiver) -> dict[str, str]:
    endpoint = {"name": "hook", "url": receiver.url, "secret": "s3cret"}
    return {
        "TRUSTYARD_EVENTS__ENDPOINTS": json.dumps([endpoint]),
        "TRUSTYARD_EVENTS__POLL_INTERVAL_SECONDS": "0.2",
        "TRUSTYARD_EVENTS__BACKOFF_INITIAL_SECONDS": "0.2",
        "TRUSTYARD_EVENTS__BACKOFF_MAX_SECONDS": "1",
    }


def test_skopeo_push_while_receiver_down_delivered_after_restart(tmp_path: Path) -> None:
    receiver = Receiver()
    server = ServerProcess(tmp_path / "data", extra_env=events_env(receiver)).start()
    image = make_image(2, seed="events-skopeo")
    layout = write_layout(tmp_path / "layout", {"v1": image})
    try:
        run(
            require("skopeo"),
            "copy",
            "--dest-tls-verify=false",
            f"oci:{layout}:v1",
            f"docker://{server.host}/ev/app:v1",
        )
        time.sleep(1.0)  # attempts fail against the closed port
        assert receiver.events() == []
        server.stop()
        receiver.start()
        server.start()
        pushed = {sha256(b) for b in image.blobs} | {image.digest}
        events = receiver.wait_for(lambda e: {x["target"]["digest"] for x in e} >= pushed, 30)
        time.sleep(0.5)
        events = receiver.events()
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()
        receiver.stop()
    assert len(events) == len({e["id"] for e in events}) == len(pushed)
    for event in events:
        check_distribution_shape(event)
        assert event["action"] == "push" and event["target"]["repository"] == "ev/app"
        assert event["request"]["useragent"] and event["request"]["method"] in ("PUT", "POST")
        assert event["source"]["addr"].endswith(f":{server.port}")
    manifest = next(e for e in events if e["target"]["digest"] == image.digest)
    assert manifest["target"]["mediaType"] == OCI_MANIFEST and manifest["target"]["tag"] == "v1"
    assert manifest["target"]["url"] == f"http://{server.host}/v2/ev/app/manifests/{image.digest}"
    for headers, body in receiver.posts:
        assert signature_ok("s3cret", headers, body)
    delivered = [
        line
        for line in metrics.splitlines()
        if line.startswith('trustyard_events_total{endpoint="hook",outcome="delivered"}')
    ]
    assert delivered and float(delivered[0].split()[-1]) >= 1
    assert 'trustyard_events_outbox{state="pending"} 0.0' in metrics


def test_notary_publish_sends_trust_published(tmp_path: Path) -> None:
    from tests.integration.trusttools import notary

    receiver = Receiver().start()
    endpoint = {"name": "trust", "url": receiver.url, "actions": ["trust-published"]}
    env = {**events_env(receiver), "TRUSTYARD_EVENTS__ENDPOINTS": json.dumps([endpoint])}
    server = ServerProcess(tmp_path / "data", extra_env=env).start()
    gun = "127.0.0.1/team/trusted"
    try:
        notary(server, tmp_path / "notary", "init", gun, "-p")
        events = receiver.wait_for(lambda e: len(e) >= 1, 30)
        time.sleep(0.5)
        events = receiver.events()
    finally:
        server.stop()
        receiver.stop()
    assert len(events) == 1
    check_distribution_shape(events[0])
    assert events[0]["action"] == "trust-published"
    assert events[0]["target"]["repository"] == gun
    assert "root" in events[0]["target"]["roles"]
    assert events[0]["request"]["method"] == "POST"
