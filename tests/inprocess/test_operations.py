"""Operator endpoints in-process: /healthz, /readyz (with a real database outage) and /metrics.

The metrics are read back from the exposition text, the way Prometheus reads them, so a sample
is asserted by its exact label set; repository names must never appear in a label.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.inprocess.conftest import fresh_data_dir, make_settings, serve
from tests.inprocess.helpers import make_image, push_blob, push_image
from tests.inprocess.test_outages import _client, _outage
from trustyard.config import AuthSettings, Settings
from trustyard.wiring.health import readiness

MANIFESTS = "/v2/{name:path}/manifests/{reference}"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` with exactly these labels (0 when absent)."""
    for line in text.splitlines():
        m = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if not m or m[1] != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m[2]))
        if found == labels:
            return float(m[3])
    return 0.0


async def test_healthz_and_readyz_answer_when_all_is_up(settings: Settings) -> None:
    async with serve(settings) as c:
        r = await c.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        assert (await c.head("/healthz")).status_code == 200
        r = await c.get("/readyz")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": {"database": "ok", "storage": "ok"}}
        assert r.headers["Cache-Control"] == "no-store"


async def test_readyz_names_the_database_while_it_is_gone_and_recovers(
    settings: Settings,
) -> None:
    async with _client(settings) as (app, c):
        with await _outage(app, settings):
            r = await c.get("/readyz")
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["status"] == "unavailable"
            assert body["checks"]["storage"] == "ok"
            assert body["checks"]["database"].startswith("down: ")
            # liveness does not depend on the database: restarting would not bring it back
            assert (await c.get("/healthz")).status_code == 200
        assert (await c.get("/readyz")).status_code == 200


async def test_a_probe_that_hangs_or_raises_is_down_with_a_reason_and_no_credentials() -> None:
    async def hangs() -> None:
        await asyncio.sleep(30)

    async def raises() -> None:
        raise ConnectionRefusedError("connect to postgresql://app:s3cret@db:5432/x refused")

    async def fine() -> None:
        return None

    answer = await readiness({"a": hangs, "b": raises, "c": fine}, seconds=0.05)
    assert not answer.ready
    assert answer.checks["a"] == "down: no answer within 0.05 s"
    assert answer.checks["b"].startswith("down: ConnectionRefusedError: ")
    assert "s3cret" not in answer.checks["b"] and "app:" not in answer.checks["b"]
    assert answer.checks["c"] == "ok"


async def test_metrics_count_by_route_template_never_by_repository(settings: Settings) -> None:
    async with serve(settings) as c:
        before = (await c.get("/metrics")).text
        blob = b"x" * 10_000
        await push_blob(c, "team/secret-project", blob)
        await push_image(c, "team/secret-project", make_image("m"), "v1")
        for _ in range(3):
            assert (await c.get("/v2/team/secret-project/manifests/nope")).status_code == 404
        r = await c.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text
    assert "secret-project" not in text
    get_404 = {"route": MANIFESTS, "method": "GET", "status": "404"}
    counted = sample(text, "trustyard_http_requests_total", **get_404)
    assert counted - sample(before, "trustyard_http_requests_total", **get_404) == 3
    put = {"route": MANIFESTS, "method": "PUT", "status": "201"}
    assert sample(text, "trustyard_http_requests_total", **put) >= 1
    uploads = "/v2/{name:path}/blobs/uploads/"
    got_in = sample(text, "trustyard_http_bytes_total", route=uploads, direction="in")
    assert got_in >= len(blob)
    latency = {"route": MANIFESTS, "method": "GET"}
    assert sample(text, "trustyard_http_request_duration_seconds_count", **latency) >= 3
    assert sample(text, "trustyard_http_requests_in_flight", route=MANIFESTS) == 0


async def test_metrics_off_is_404(tmp_path: Path, migrated_database: Path) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", migrated_database)
    async with serve(make_settings(data_dir, metrics=False)) as c:
        assert (await c.get("/metrics")).status_code == 404
        assert (await c.get("/readyz")).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_need_no_credentials_when_auth_is_on(
    tmp_path: Path, migrated_database: Path, path: str
) -> None:
    data_dir = fresh_data_dir(tmp_path / "data", migrated_database)
    async with serve(make_settings(data_dir, auth=AuthSettings(mode="token"))) as c:
        assert (await c.get("/v2/")).status_code == 401
        assert (await c.get(path)).status_code == 200
