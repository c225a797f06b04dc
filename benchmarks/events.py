"""The cost of durable events: trustyard with no webhook, with a push webhook, and with one that
also takes pull events (`pulls = true`: one outbox write per pull), each a fresh 2-worker server
delivering to a local receiver that answers 200.

- manifest GET by tag, 32 clients (wrk): a push-only endpoint adds nothing to a pull; `pulls`
  adds a database write per GET.
- manifest PUT (a new tag each time, blobs already pushed), one client: ms per push, with the
  outbox rows written in the push's transaction and the deliverer running beside it.

Rows are trustyard only (Distribution's notifications are an in-memory queue, not comparable).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks.api import push_image, put_manifest, small_image
from benchmarks.context import FULL, Context
from benchmarks.manifests import wrk
from benchmarks.servers import TRUSTYARD, TrustyardServer, free_port

FAMILY = "Events (webhooks off / on / on with pull events)"
REPO = "bench/events"
VARIANTS = ("off", "on", "pulls")


@dataclass
class _EventsServer(TrustyardServer):
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra_env}


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _env(variant: str, receiver_port: int) -> dict[str, str]:
    if variant == "off":
        return {}
    endpoint = {
        "name": "bench",
        "url": f"http://127.0.0.1:{receiver_port}/",
        "pulls": variant == "pulls",
    }
    return {"TRUSTYARD_EVENTS__ENDPOINTS": json.dumps([endpoint])}


def run(ctx: Context) -> None:
    pushes = 200 if ctx.mode.name == FULL.name else 30
    receiver = ThreadingHTTPServer(("127.0.0.1", free_port()), _Ok)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        for variant in VARIANTS:
            server = _EventsServer(
                TRUSTYARD,
                ctx.workdir / f"trustyard-events-{variant}",
                workers=2,
                extra_env=_env(variant, receiver.server_address[1]),
            )
            server.start()
            try:
                _measure(ctx, server, variant, pushes)
            finally:
                server.stop()
            ctx.say(f"events {variant} done")
    finally:
        receiver.shutdown()
        receiver.server_close()


def _measure(ctx: Context, server: TrustyardServer, variant: str, pushes: int) -> None:
    image = small_image(1024, layers=1, seed=f"events-{variant}")
    put = ctx.results.workload(
        f"events_manifest_put_{variant}",
        FAMILY,
        f"manifest PUT (new tag), 1 client, events {variant} (ms per push)",
        "ms",
        higher_is_better=False,
    )
    with server.connect() as conn:
        push_image(conn, REPO, "t0", image)
        took = []
        for i in range(1, pushes + 1):
            started = time.perf_counter()
            put_manifest(conn, REPO, f"t{i}", image.manifest)
            took.append((time.perf_counter() - started) * 1000)
    put.add(TRUSTYARD, statistics.median(took), p99_ms=sorted(took)[int(len(took) * 0.99) - 1])
    get = ctx.results.workload(
        f"events_manifest_get_c32_{variant}",
        FAMILY,
        f"manifest GET by tag, 32 clients (wrk), events {variant}",
        "req/s",
    )
    url = f"{server.url}/v2/{REPO}/manifests/t0"
    for _rep in range(ctx.mode.wrk_repeats):
        get.add_load(TRUSTYARD, wrk(url, "GET", 32, ctx.mode.wrk_seconds, ctx.workdir))
