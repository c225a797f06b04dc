"""The cost of operator features (issue 21): metrics on vs off, events (webhooks) on vs off.

For every feature in `VARIANTS`, two fresh trustyards run side by side (2 workers each, their
own data directories in the bench work dir), one started with the feature's "off" environment
and one with its "on" environment; the reference registry runs twice the same way where the
feature has a counterpart there (Distribution's own Prometheus endpoint: `http.debug.prometheus`,
which counts every request, as ours does). Each pair is measured back to back, the order
alternating per repetition:

- manifest GET by tag with `hey`, 1 and 32 clients: req/s, p50/p99 and the server's CPU time per
  request (`/proc`, the process tree), which is steadier than req/s on a shared machine;
- small-image pushes (config + 2 x 4 KiB layers + manifest, the requests api.py sends), one after
  another over one connection: images/s and CPU time per image.

Events: the "on" trustyard has one webhook endpoint posting to a local sink that answers 200
(benchmarks/events.py's), so the outbox rows written in each push's transaction and their
delivery are both in the figure; `events_pulls` also takes pull events (one outbox write per
manifest GET). Distribution's notifications cannot be configured from the environment (a list
of endpoints), so the events rows are trustyard only.

The "on" row carries `overhead_pct` (req/s or images/s lost against the "off" row of the same
adjacent pair) and `cpu_overhead_pct` (CPU per request or image added), medians over the pairs.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer

from benchmarks.api import ACCEPT, push_image, small_image
from benchmarks.context import FULL, Context
from benchmarks.events import _Ok
from benchmarks.http1 import expect
from benchmarks.servers import (
    REFERENCE,
    TRUSTYARD,
    ReferenceServer,
    Server,
    TrustyardServer,
    free_port,
)
from benchmarks.stats import Workload
from benchmarks.tokens import cpu_seconds, hey

FAMILY = (
    "Operations: metrics, events on vs off (req/s and images/s, higher is better; "
    "on rows: overhead_pct = throughput lost, cpu_overhead_pct = CPU per request added)"
)
STATES = ("off", "on")
# The hook: per feature, per server, per state, the environment the server starts with (on top
# of a clean one: TRUSTYARD_* / REGISTRY_* from the caller's shell are dropped). "{free_port}"
# in a value becomes a free loopback port, "{sink}" the URL of the local webhook sink `run`
# starts. A server missing from a feature has no counterpart: its rows are trustyard only.
# `run` checks /metrics for the metrics entry, and that the sink received events for the events
# entries. New entries need their row keys in tests/integration/test_benchmarks_smoke.py.
VARIANTS: dict[str, dict[str, dict[str, dict[str, str]]]] = {
    "metrics": {
        TRUSTYARD: {"off": {"TRUSTYARD_METRICS": "false"}, "on": {}},
        REFERENCE: {
            "off": {},
            "on": {
                "REGISTRY_HTTP_DEBUG_ADDR": "127.0.0.1:{free_port}",
                "REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED": "true",
                "REGISTRY_HTTP_DEBUG_PROMETHEUS_PATH": "/metrics",
            },
        },
    },
    "events": {
        TRUSTYARD: {
            "off": {},
            "on": {"TRUSTYARD_EVENTS__ENDPOINTS": '[{"name": "bench", "url": "{sink}"}]'},
        },
    },
    "events_pulls": {
        TRUSTYARD: {
            "off": {},
            "on": {
                "TRUSTYARD_EVENTS__ENDPOINTS": '[{"name": "bench", "url": "{sink}", "pulls": true}]'
            },
        },
    },
}
GET_CLIENTS = (1, 32)
REPEATS = 5  # full mode: adjacent pairs per row (the rows are noisy on a shared machine)
PUSHES = {"full": 50, "quick": 5}  # sequential pushes per measurement
WARM_UP_CONNECTIONS = 4  # per server before the first measurement: a push and ...
WARM_UP_GETS = 10  # ... this many manifest GETs on each
LAYER_BYTES = 4096  # small: the per-request work is what a feature adds to
REPO = "bench/operations"
TAG = "latest"


def _resolved(env: dict[str, str], sink: str) -> dict[str, str]:
    return {
        k: v.replace("{free_port}", str(free_port())).replace("{sink}", sink)
        for k, v in env.items()
    }


class _Sink:
    """A local webhook receiver answering 200, counting the events it was sent."""

    def __init__(self) -> None:
        sink = self

        class Handler(_Ok):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with contextlib.suppress(ValueError, KeyError):
                    sink.received += len(json.loads(body)["events"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.received = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class VariantTrustyard(TrustyardServer):
    overrides: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.overrides}


@dataclass
class VariantReference(ReferenceServer):
    overrides: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.overrides}


def _check_metrics(servers: dict[str, dict[str, Server]]) -> None:
    """The variants really differ: `/metrics` answers where metrics are on, and only there."""
    for name, states in servers.items():
        for state, server in states.items():
            if isinstance(server, VariantReference):
                addr = server.overrides.get("REGISTRY_HTTP_DEBUG_ADDR")
                if addr is None:
                    continue
                debug_port = int(addr.rsplit(":", 1)[1])
                server = ReferenceServer(server.name, server.workdir, port=debug_port)
            with server.connect() as c:
                status = c.request("GET", "/metrics").status
            if (status == 200) != (state == "on"):
                raise RuntimeError(f"{name} metrics {state}: GET /metrics answered {status}")


def _start(ctx: Context, feature: str, sink: str) -> dict[str, dict[str, Server]]:
    servers: dict[str, dict[str, Server]] = {}
    try:
        for name, states in VARIANTS[feature].items():
            for state in STATES:
                workdir = ctx.workdir / f"{name}-{feature}-{state}"
                env = _resolved(states[state], sink)
                server: Server
                if name == TRUSTYARD:
                    server = VariantTrustyard(f"{name}-{feature}-{state}", workdir, overrides=env)
                else:
                    server = VariantReference(f"{name}-{feature}-{state}", workdir, overrides=env)
                servers.setdefault(name, {})[state] = server.start()
    except BaseException:
        _stop(servers)
        raise
    return servers


def _stop(servers: dict[str, dict[str, Server]]) -> None:
    for states in servers.values():
        for server in states.values():
            server.stop()


def _get(server: Server, clients: int, seconds: int) -> dict[str, float]:
    before = cpu_seconds(server.pid)
    r = hey(f"{server.url}/v2/{REPO}/manifests/{TAG}", clients, seconds, "-H", f"Accept: {ACCEPT}")
    r["cpu_us_per_request"] = 1e6 * (cpu_seconds(server.pid) - before) / max(1, r["requests"])
    return r


def _push(server: Server, n: int, rep: int) -> dict[str, float]:
    images = [small_image(LAYER_BYTES) for _ in range(n)]  # fresh bytes: every blob is new
    with server.connect() as conn:
        before = cpu_seconds(server.pid)
        started = time.perf_counter()
        for i, image in enumerate(images):
            push_image(conn, f"{REPO}-push", f"r{rep}-{i}", image)
        elapsed = time.perf_counter() - started
        used = cpu_seconds(server.pid) - before
    return {"rps": n / elapsed, "cpu_us_per_request": 1e6 * used / n, "seconds": elapsed}


def _paired(
    rows: dict[str, Workload],
    name: str,
    seen: dict[str, dict[str, float]],
    keys: tuple[str, ...],
) -> None:
    """Add one adjacent off/on pair to the rows; the on row gets the pair's overhead."""
    off = seen["off"]
    for state, r in seen.items():
        extra = {k: r[k] for k in keys if k in r}
        if state == "on":
            extra["overhead_pct"] = 100 * (1 - r["rps"] / off["rps"])
            extra["cpu_overhead_pct"] = 100 * (
                r["cpu_us_per_request"] / off["cpu_us_per_request"] - 1
            )
        rows[state].add(name, r["rps"], **extra)


def _measure(ctx: Context, feature: str, servers: dict[str, dict[str, Server]]) -> None:
    mode = ctx.mode
    repeats = REPEATS if mode.name == FULL.name else mode.wrk_repeats
    for states in servers.values():  # the image GET reads, then each path warmed
        for server in states.values():
            with server.connect() as conn:
                push_image(conn, REPO, TAG, small_image(LAYER_BYTES, seed="operations"))
            # a connection stays on one worker: several, so that every worker has pushed and
            # read before the first measured push (else the first variant measured pays for it)
            for i in range(WARM_UP_CONNECTIONS):
                with server.connect() as conn:
                    push_image(conn, f"{REPO}-push", f"warm-{i}", small_image(LAYER_BYTES))
                    for _ in range(WARM_UP_GETS):
                        path = f"/v2/{REPO}/manifests/{TAG}"
                        expect(conn.request("GET", path, {"Accept": ACCEPT}), 200)
    for clients in GET_CLIENTS:
        rows = {
            state: ctx.results.workload(
                f"ops_{feature}_{state}_get_c{clients}",
                FAMILY,
                f"manifest GET by tag, {clients} client{'s' if clients > 1 else ''}, "
                f"{feature} {state}",
                "req/s",
            )
            for state in STATES
        }
        for rep in range(repeats):
            order = STATES if rep % 2 == 0 else STATES[::-1]
            for name, states in servers.items():
                seen = {s: _get(states[s], clients, mode.wrk_seconds) for s in order}
                _paired(rows, name, seen, ("p50_ms", "p99_ms", "errors", "cpu_us_per_request"))
        ctx.say(f"{feature}: manifest GET, {clients} clients done")
    n = PUSHES[mode.name]
    rows = {
        state: ctx.results.workload(
            f"ops_{feature}_{state}_push",
            FAMILY,
            f"{n} sequential pushes, 2 x {LAYER_BYTES // 1024} KiB layers, {feature} {state}",
            "images/s",
        )
        for state in STATES
    }
    for rep in range(repeats):
        order = STATES if rep % 2 == 0 else STATES[::-1]
        for name, states in servers.items():
            seen = {s: _push(states[s], n, rep) for s in order}
            _paired(rows, name, seen, ("cpu_us_per_request", "seconds"))
    ctx.say(f"{feature}: sequential pushes done")


def run(ctx: Context) -> None:
    sink = _Sink()
    try:
        for feature in VARIANTS:
            servers = _start(ctx, feature, sink.url)
            try:
                if feature == "metrics":
                    _check_metrics(servers)
                received = sink.received
                _measure(ctx, feature, servers)
                if feature.startswith("events"):
                    _check_delivered(sink, received, feature)
            finally:
                _stop(servers)
    finally:
        sink.close()
    ctx.results.notes.append(
        "operations: fresh servers per feature and state (trustyard 2 workers); metrics off = "
        "TRUSTYARD_METRICS=false; the reference's metrics = its http.debug.prometheus "
        "(REGISTRY_HTTP_DEBUG_PROMETHEUS_ENABLED); events on = one webhook endpoint to a local "
        "sink (events_pulls: with pull events), trustyard only; push rows: cpu_us_per_request "
        "is per image"
    )


def _check_delivered(sink: _Sink, before: int, feature: str) -> None:
    """The "on" server really emitted: its events reached the sink (within a few seconds)."""
    deadline = time.monotonic() + 10
    while sink.received == before:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{feature} on: the webhook sink received no event")
        time.sleep(0.1)
