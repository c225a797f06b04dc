"""Entry point: start both registries, run every workload family against both, report."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    blobs,
    concurrent,
    events,
    listings,
    machine,
    manifests,
    mirror,
    operations,
    replicas,
    scale,
    skopeo,
    targets,
    tokens,
)
from benchmarks.context import FULL, QUICK, Context
from benchmarks.servers import (
    REFERENCE,
    TRUSTYARD,
    ReferenceServer,
    Server,
    TrustyardServer,
    reference_version,
)
from benchmarks.stats import Results, render

FAMILIES: dict[str, Callable[[Context], None]] = {
    "blobs": blobs.run,
    "skopeo": skopeo.run,
    "manifests": manifests.run,
    "listings": listings.run,
    "concurrent": concurrent.run,
    "replicas": replicas.run,
    "tokens": tokens.run,
    "operations": operations.run,
    "events": events.run,
    "mirror": mirror.run,
    "scale": scale.run,
}
# Families a --quick run leaves out unless named with --only (minutes of set-up at any size).
FULL_ONLY = frozenset({"scale"})
RESULTS_DIR = Path(__file__).parent / "results"


def _tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return "not installed"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_machine() -> dict[str, Any]:
    from importlib.metadata import version

    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "trustyard": f"{version('trustyard')} ({_git_state()})",
        "granian": version("granian"),
        "reference": reference_version(),
        "wrk": _tool_version(["wrk", "--version"]),
        "skopeo": _tool_version(["skopeo", "--version"]),
    }


def _guarded(results: Results, family: str, fn: Callable[[], None]) -> None:
    """A failing family is reported (and fails the run at the end); the others still run."""
    try:
        fn()
    except Exception as exc:
        traceback.print_exc()
        results.failures.append(f"{family}: {type(exc).__name__}: {str(exc)[:500]}")


def _git_state() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def check_tools() -> list[str]:
    return [t for t in ("docker-registry", "wrk", "hey", "skopeo") if shutil.which(t) is None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run the same workloads against trustyard and the reference registry.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (CI smoke test)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(FAMILIES),
        help="run only these workload families (repeatable)",
    )
    parser.add_argument(
        "--no-record",
        action="store_true",
        help=f"full mode: do not record the run in {RESULTS_DIR.name}/",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--million",
        action="store_true",
        help="scale also at 1,000,000 manifests, blob files and tags (replicas: tags on PostgreSQL)",
    )
    args = parser.parse_args(argv)

    missing = check_tools()
    if missing:
        print(f"error: missing tools: {', '.join(missing)} (run scripts/install-deps.sh)")
        return 2
    mode = QUICK if args.quick else FULL
    if args.million:
        mode = dataclasses.replace(mode, scale_million=True)
    families = args.only or [f for f in FAMILIES if not (args.quick and f in FULL_ONLY)]
    started = time.monotonic()
    meta = {
        "mode": mode.name,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "trustyard_workers": 2,
        "load_generator": "wrk (C, event loop; HTTP/1.1 keep-alive), same for both servers",
        "blob_client": "raw-socket HTTP/1.1 client: sendfile up, recv_into down",
    }
    print(f"trustyard benchmarks, {mode.name} mode: {', '.join(families)}", flush=True)
    print(f"  machine: {json.dumps(meta['machine'])}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="trustyard-bench-"))
    results = Results()
    servers: dict[str, Server] = {}
    try:
        print("machine limits", flush=True)
        ctx = Context(mode, workdir, servers, results)
        machine.run(ctx)
        servers[TRUSTYARD] = TrustyardServer(TRUSTYARD, workdir / TRUSTYARD, workers=2).start()
        servers[REFERENCE] = ReferenceServer(REFERENCE, workdir / REFERENCE).start()
        for family in families:
            print(family, flush=True)
            _guarded(results, family, lambda family=family: FAMILIES[family](ctx))
        if "manifests" in families:
            print("manifests (trustyard --workers 1)", flush=True)

            def single_worker() -> None:
                # a fresh data directory: the run measures serving, not reopening a database
                servers[TRUSTYARD].stop()
                servers[TRUSTYARD] = TrustyardServer(
                    TRUSTYARD, workdir / "trustyard-workers1", workers=1
                ).start()
                manifests.run_single_worker(ctx)

            _guarded(results, "manifests (workers 1)", single_worker)
    finally:
        for server in servers.values():
            server.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}")

    targets.evaluate(results)
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document = {"meta": meta, **results.as_json()}
    print(render(results))
    print(
        f"total {meta['seconds']} s; load average at end {meta['machine']['load_average_at_end']}"
    )
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"JSON written to {args.json}")
    if mode.name == FULL.name and not args.no_record and not args.only:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        (RESULTS_DIR / f"{stamp}-full.json").write_text(json.dumps(document, indent=2) + "\n")
        (RESULTS_DIR / f"{stamp}-full.txt").write_text(render(results))
        print(f"recorded in {RESULTS_DIR}/{stamp}-full.json")
    if results.failures:
        print("FAILED workload families:\n  " + "\n  ".join(results.failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
