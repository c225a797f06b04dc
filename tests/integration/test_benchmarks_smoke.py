"""The benchmark suite's quick mode runs end to end against both servers (figures not judged).

Never asserts on speed: only that every workload produced numbers for trustyard and for the
reference registry, and that the JSON document has the shape the docs describe.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks.machine import DISK_WRITE_BUFFERED, DISK_WRITE_DIRECT, LOOPBACK_SHA256, SHA256
from benchmarks.replicas import missing_services

from tests.integration.conftest import require

pytestmark = [pytest.mark.slow, pytest.mark.needs_skopeo]

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "blob_push_monolithic",
    "blob_push_chunked",
    "blob_pull",
    "blob_pull_first",
    "rss_stream_push",
    "rss_stream_pull",
    "skopeo_push",
    "skopeo_pull",
    "mirror_cold_pull",
    "mirror_warm_pull",
    *(
        f"manifest_{m}_{by}_c{c}"
        for m in ("get", "head")
        for by in ("tag", "digest")
        for c in (1, 32)
    ),
    *(f"manifest_get_{by}_c{c}_workers1" for by in ("tag", "digest") for c in (1, 32)),
    *(
        f"{kind}_{page}_{n}"
        for kind in ("tags", "catalog")
        for page in ("first_page", "middle_page", "whole_list")
        for n in (100, 1000)
    ),
    "concurrent_pushes",
    "rss_concurrent_pushes",
    *(f"token_head_{auth}_c{c}" for auth in ("none", "token") for c in (1, 32)),
    # operations: metrics off / on, the reference's own Prometheus endpoint off / on
    *(f"ops_metrics_{state}_{w}" for state in ("off", "on") for w in ("get_c1", "get_c32", "push")),
}
# rows with no reference counterpart (Distribution issues no tokens): trustyard figures only
TRUSTYARD_ONLY = {f"token_{g}_grant_c{c}" for g in ("password", "refresh") for c in (1, 16)}
# operations: events on vs off, with and without pull events (no reference counterpart)
TRUSTYARD_ONLY |= {
    f"ops_{feature}_{state}_{w}"
    for feature in ("events", "events_pulls")
    for state in ("off", "on")
    for w in ("get_c1", "get_c32", "push")
}
# events on vs off (benchmarks/events.py): trustyard only
TRUSTYARD_ONLY |= {
    f"events_manifest_{w}_{v}" for w in ("put", "get_c32") for v in ("off", "on", "pulls")
}
# replicas family (needs PostgreSQL, haproxy, redis-server, moto; else it is skipped with a
# note): trustyard behind haproxy vs the reference's S3 driver, then listings over PostgreSQL
if not missing_services():
    EXPECTED |= {f"replicas_{w}_r{n}" for w in ("push", "pull", "manifest_get") for n in (1, 2, 3)}
    TRUSTYARD_ONLY |= {
        f"replicas_{kind}_{page}_{n}"
        for kind, sizes in (("tags", (1000, 100000)), ("catalog", (1000, 10000)))
        for page in ("first_page", "middle_page")
        for n in sizes
    }


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def test_quick_mode_measures_every_workload_on_both_servers(tmp_path: Path) -> None:
    for tool in ("docker-registry", "wrk", "hey", "skopeo"):
        require(tool)
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    doc = json.loads(out.read_text())

    assert doc["meta"]["mode"] == "quick"
    for limit in (SHA256, DISK_WRITE_BUFFERED, DISK_WRITE_DIRECT, LOOPBACK_SHA256):
        assert _number(doc["machine_limits"][limit]["median"]), limit

    workloads = {w["workload"]: w for w in doc["workloads"]}
    missing = (EXPECTED | TRUSTYARD_ONLY) - workloads.keys()
    assert not missing, f"workloads missing from the JSON: {sorted(missing)}"
    for key in EXPECTED:
        w = workloads[key]
        for server in ("trustyard", "reference"):
            entry = w["servers"].get(server)
            assert entry is not None, f"{key}: no figures for {server}"
            for field in ("median", "min", "max"):
                assert _number(entry[field]), f"{key}/{server}/{field} = {entry[field]!r}"
        assert _number(w["ratio_trustyard_reference"]), key
    for key in TRUSTYARD_ONLY:
        entry = workloads[key]["servers"].get("trustyard")
        assert entry is not None and _number(entry["median"]), f"{key}: no trustyard figure"

    assert _number(workloads["concurrent_pushes"]["servers"]["trustyard"]["errors"])
    for w in ("get_c1", "get_c32", "push"):  # the on row carries the pair's overhead
        for server in ("trustyard", "reference"):
            entry = workloads[f"ops_metrics_on_{w}"]["servers"][server]
            assert _number(entry["overhead_pct"]) and _number(entry["cpu_overhead_pct"]), w
        for feature in ("events", "events_pulls"):
            entry = workloads[f"ops_{feature}_on_{w}"]["servers"]["trustyard"]
            assert _number(entry["overhead_pct"]) and _number(entry["cpu_overhead_pct"]), w
    assert doc["targets"] and all("pass" in t for t in doc["targets"])
    assert "Targets (informational)" in proc.stdout
