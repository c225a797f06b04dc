"""Operator endpoints on a real `trustyard serve`: two Granian workers counted as one server,
and a real Prometheus (Debian's package) scraping /metrics and answering a query."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.inprocess.test_operations import sample
from tests.integration.conftest import require
from tests.integration.server import ServerProcess, free_port

pytestmark = pytest.mark.integration

REQUESTS = "trustyard_http_requests_total"
PING = {"route": "/v2/", "method": "GET", "status": "200"}


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    srv = ServerProcess(
        tmp_path / "data",
        extra_args=["--workers", "2"],
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
    ).start()
    yield srv, multiproc
    srv.stop()


def test_every_worker_is_counted_whichever_answers(
    two_workers: tuple[ServerProcess, Path],
) -> None:
    srv, multiproc = two_workers
    before = httpx.get(srv.url + "/metrics").text
    for _ in range(60):  # a new connection each: the kernel spreads them over both workers
        assert httpx.get(srv.url + "/v2/").status_code == 200
    # Both workers wrote samples (one file set per process id) ...
    pids = {p.name.rsplit("_", 1)[-1] for p in multiproc.glob("counter_*.db")}
    assert len(pids) == 2, sorted(p.name for p in multiproc.iterdir())
    # ... and whichever worker answers /metrics adds them all up.
    for _ in range(10):
        now = httpx.get(srv.url + "/metrics").text
        assert sample(now, REQUESTS, **PING) - sample(before, REQUESTS, **PING) == 60
    r = httpx.get(srv.url + "/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok"}


def test_a_real_prometheus_scrapes_the_request_counters(
    server: ServerProcess, tmp_path: Path
) -> None:
    binary = require("prometheus")
    for _ in range(5):
        httpx.get(server.url + "/v2/")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: trustyard\n"
        f"    static_configs:\n      - targets: ['{server.host}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        query = 'trustyard_http_requests_total{route="/v2/",method="GET",status="200"}'
        found: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not found:
            time.sleep(1)
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": query})
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                found = r.json()["data"]["result"]
        assert found, (tmp_path / "prometheus.log").read_text()[-3000:]
        value = found[0]["value"]
        assert isinstance(value, list) and float(value[1]) >= 5
        assert found[0]["metric"]["job"] == "trustyard"  # type: ignore[index]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
