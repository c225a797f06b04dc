"""The `notary` policy with `server = URL` inside a running `trustyard serve`, the URL being a
malicious Notary server: pulls are denied with DENIED and a reason (never a 500 or a hang) when
that server freezes the client, rolls it back, or streams endless metadata."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess
from tests.trust_client.evil import Collection, EvilServer, Stream, endless

pytestmark = pytest.mark.slow

PREFIX = "evil.example/"
REPO = "remote/app"
GUN = PREFIX + REPO


@pytest.fixture(scope="module")
def evil() -> Iterator[EvilServer]:
    with EvilServer() as s:
        yield s


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, evil: EvilServer) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("remote-policy") / "data")
    rules = [
        {
            "name": "remote-notary",
            "repositories": ["remote/*"],
            "require": {"kind": "notary", "server": evil.url, "gun_prefix": PREFIX},
        }
    ]
    s.extra_env = {"TRUSTYARD_POLICY__RULES": json.dumps(rules)}
    s.start()
    yield s
    s.stop()


def signs(manifest: bytes) -> dict[str, object]:
    return {"hashes": {"sha256": base64.b64encode(hashlib.sha256(manifest).digest()).decode()},
            "length": len(manifest)}  # fmt: skip


def pull(srv: ServerProcess, tag: str) -> httpx.Response:
    accept = "application/vnd.oci.image.manifest.v1+json"
    return httpx.get(
        f"{srv.url}/v2/{REPO}/manifests/{tag}", headers={"Accept": accept}, timeout=120
    )


def denied(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["errors"][0]
    assert error["code"] == "DENIED" and reason in error["message"], error


def test_freeze_rollback_and_endless_metadata_deny_the_pull(
    srv: ServerProcess, evil: EvilServer, tmp_path: Path
) -> None:
    one, two = make_image(seed="remote-one"), make_image(seed="remote-two")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        push_image(c, REPO, two, "v2")
        push_image(c, REPO, one, "v1")
    coll = Collection(GUN)
    v1 = coll.files(1, {"v1": signs(one.manifest)})
    evil.serve(GUN, v1)
    assert pull(srv, "v1").status_code == 200
    # freeze: timestamp and snapshot withheld
    evil.withhold(GUN, "timestamp")
    evil.withhold(GUN, "snapshot")
    denied(pull(srv, "v1"), "has no timestamp metadata")
    # the owner moves v1 to the second image (v2 of the collection) and the registry's tag
    # still names the first: denied as a moved tag
    evil.serve(GUN, coll.files(2, {"v1": signs(two.manifest)}))
    denied(pull(srv, "v1"), "the tag moved after signing")
    # rollback: the server replays the old collection, which signs what the registry serves
    evil.serve(GUN, v1)
    denied(pull(srv, "v1"), "older than the trusted version 2")
    # endless root.json: denied within the fetch deadline, not a 500, not a hang
    path = f"/v2/{GUN}/_trust/tuf/root.json"
    evil.routes[path] = Stream(endless(b"[", 4 << 30))
    start = time.monotonic()
    denied(pull(srv, "v1"), "byte limit")
    assert time.monotonic() - start < 60
    assert evil.sent[path] < 256 << 20
