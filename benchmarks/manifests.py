"""Manifest GET and HEAD by tag and by digest, 1 and 32 concurrent clients, driven by wrk.

wrk (C, epoll, keep-alive) is the load generator for both servers; a trivial Granian app
measured by the same wrk shows the client's own ceiling on this machine, so a figure far
below that ceiling is the server's, not the client's.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.api import ACCEPT, push_image, small_image
from benchmarks.context import Context
from benchmarks.servers import TRUSTYARD, Server, free_port
from benchmarks.stats import Workload

FAMILY = "Manifests (requests/s, higher is better; p50/p99 latency in ms)"
REPO = "bench/manifest"
TAG = "latest"
CLIENTS = (1, 32)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"unreadable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(url: str, method: str, clients: int, seconds: int, workdir: Path) -> dict[str, float]:
    script = workdir / f"wrk-{method}.lua"
    script.write_text(
        f'wrk.method = "{method}"\nwrk.headers["Accept"] = "{ACCEPT}"\n'
        "done = function(summary, latency, requests)\n"
        '  io.write(string.format("BENCH p50=%d p99=%d errors=%d non2xx=%d\\n",\n'
        "    latency:percentile(50), latency:percentile(99),\n"
        "    summary.errors.connect + summary.errors.read + summary.errors.write"
        " + summary.errors.timeout, summary.errors.status))\n"
        "end\n"
    )
    threads = min(2, clients)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{clients}", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bench = re.search(r"BENCH p50=(\d+) p99=(\d+) errors=(\d+) non2xx=(\d+)", out)
    if rps is None or bench is None:
        raise RuntimeError(f"unreadable wrk output:\n{out}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": int(bench.group(1)) / 1000,  # wrk's Lua latencies are in microseconds
        "p99_ms": int(bench.group(2)) / 1000,
        "errors": int(bench.group(3)) + int(bench.group(4)),
    }


def run_hey(
    url: str, method: str, clients: int, seconds: int, *args: str, require_ok: bool = False
) -> dict[str, float]:
    """One `hey` run: req/s, p50/p99 (ms), responses (`requests`) and `errors` (non-2xx
    answers plus transport errors); `require_ok`: a run without one 2xx answer is an error."""
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", str(clients), "-m", method, *args, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50% in ([\d.]+) secs", out)
    # hey prints no 99% line under 100 answers (a slow server, a 1 s quick run); the
    # nearest-rank 99th percentile of fewer than 100 samples is the slowest one
    p99 = re.search(r"99% in ([\d.]+) secs", out) or re.search(r"Slowest:\s+([\d.]+) secs", out)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"unreadable hey output:\n{out}")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    ok = sum(n for c, n in codes.items() if 200 <= c < 300)
    errors_part = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    errors = sum(int(n) for n in re.findall(r"^\s+\[(\d+)\]", errors_part, re.M))
    bad = sum(codes.values()) - ok + errors
    if require_ok and bad and not ok:
        raise RuntimeError(f"hey {method} {url}: no 2xx answer:\n{out[-2000:]}")
    return {
        "rps": float(rps.group(1)),
        "p50_ms": float(p50.group(1)) * 1000,
        "p99_ms": float(p99.group(1)) * 1000,
        "errors": bad,
        "requests": sum(codes.values()),
    }


def hey(url: str, method: str, clients: int, seconds: int) -> dict[str, float]:
    """HEAD load: wrk cannot (its parser waits for the Content-Length body after a HEAD)."""
    return run_hey(url, method, clients, seconds, "-A", ACCEPT)


def load(url: str, method: str, clients: int, seconds: int, workdir: Path) -> dict[str, float]:
    if method == "HEAD":
        return hey(url, method, clients, seconds)
    return wrk(url, method, clients, seconds, workdir)


def setup(server: Server) -> str:
    image = small_image(1024, layers=1, seed="manifest-bench")
    with server.connect() as conn:
        push_image(conn, REPO, TAG, image)
    return image.digest


def run(ctx: Context) -> None:
    mode = ctx.mode
    digests = {name: setup(server) for name, server in ctx.each()}
    for method in ("GET", "HEAD"):
        for by in ("tag", "digest"):
            for clients in CLIENTS:
                key = f"manifest_{method.lower()}_{by}_c{clients}"
                w = ctx.results.workload(
                    key,
                    FAMILY,
                    f"{method} by {by}, {clients} client{'s' if clients > 1 else ''} ({'hey' if method == 'HEAD' else 'wrk'})",
                    "req/s",
                )
                for _rep in range(mode.wrk_repeats):
                    for name, server in ctx.each():
                        ref = TAG if by == "tag" else digests[name]
                        url = f"{server.url}/v2/{REPO}/manifests/{ref}"
                        w.add_load(name, load(url, method, clients, mode.wrk_seconds, ctx.workdir))
            ctx.say(f"{method} by {by} done")
    ceiling(ctx)


def run_single_worker(ctx: Context) -> None:
    """trustyard with one worker, GET and HEAD (the reference figures are in the rows above):
    what the second worker buys, since one worker is what would keep memory lowest."""
    mode = ctx.mode
    server = ctx.servers[TRUSTYARD]
    digest = setup(server)
    for method in ("GET", "HEAD"):
        for by in ("tag", "digest"):
            for clients in CLIENTS:
                key = f"manifest_{method.lower()}_{by}_c{clients}"
                w = ctx.results.workload(
                    f"{key}_workers1",
                    FAMILY,
                    f"{method} by {by}, {clients} client{'s' if clients > 1 else ''}, "
                    "trustyard 1 worker",
                    "req/s",
                )
                ref = TAG if by == "tag" else digest
                url = f"{server.url}/v2/{REPO}/manifests/{ref}"
                for _rep in range(mode.wrk_repeats):
                    w.add_load(TRUSTYARD, load(url, method, clients, mode.wrk_seconds, ctx.workdir))
                _add_reference(ctx, key, w)


def _add_reference(ctx: Context, key: str, w: Workload) -> None:
    """The reference's figures for the same request (from the 2-worker rows), for the ratio."""
    ref_w = ctx.results.workloads.get(key)
    if ref_w is None:
        return
    for name, values in ref_w.samples.items():
        if name != TRUSTYARD:
            for i, v in enumerate(values):
                w.add(
                    name,
                    v,
                    p50_ms=ref_w.extras[name]["p50_ms"][i],
                    p99_ms=ref_w.extras[name]["p99_ms"][i],
                )


TRIVIAL_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})
"""


def ceiling(ctx: Context) -> None:
    """wrk against a trivial ASGI app on Granian (1 worker): the client's ceiling here."""
    (ctx.workdir / "trivial_app.py").write_text(TRIVIAL_APP)
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "trivial_app:app",
        ],
        cwd=ctx.workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(1.5)
        seen = {}
        for method, client in (("GET", "wrk"), ("HEAD", "hey")):
            r = load(f"http://127.0.0.1:{port}/", method, 32, ctx.mode.wrk_seconds, ctx.workdir)
            ctx.results.machine.setdefault(
                f"{client} ceiling, req/s ({method}, 32 clients)", []
            ).append(r["rps"])
            seen[client] = r["rps"]
        ctx.results.notes.append(
            "load generators: wrk for GET, hey for HEAD (wrk cannot do HEAD); against a trivial "
            f"ASGI app on Granian (1 worker) the same clients reached {seen['wrk']:,.0f} (wrk) and "
            f"{seen['hey']:,.0f} (hey) req/s at 32 clients: far above the registries' figures"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
