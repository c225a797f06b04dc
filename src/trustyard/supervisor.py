"""The Granian supervisor `trustyard serve` execs into (one worker) once its checks passed.

`serve` imports the whole application for its checks (schema, preflight lifespan). Granian's
supervisor only forks workers, watches them and relays signals; when that was the `serve`
process itself, every server paid a second interpreter full of imports beside its workers
(issue 24: with the default single worker, 65 MiB PSS of supervisor beside a 52 MiB worker).
Exec'ing this module drops all of that: it imports Granian and the standard library only, and
each worker imports the application itself (`trustyard.http.app:worker_app`, as before).
Granian's own signal handling and graceful stop are unchanged. With several workers `serve`
calls `run` in-process instead: workers forked from the full process share its imported pages,
which costs less than each importing on its own (docs/benchmarks.md, second round).

Run as `python -m trustyard.supervisor '<json>'`; the JSON holds Granian's arguments (no
secrets: paths and numbers), and optionally `cleanup`, a directory to remove at exit (the
prometheus multiprocess directory `serve` made; its atexit hook does not survive the exec).
"""

from __future__ import annotations

import ctypes
import json
import shutil
import sys
from pathlib import Path
from typing import Any

# glibc's mallopt parameter number for the arena cap (malloc.h: M_ARENA_MAX).
_M_ARENA_MAX = -8


def one_malloc_arena() -> None:
    """Let every thread allocate from glibc's main arena, before the workers fork.

    Blob reads and hashing run on pools of threads, and glibc gives each thread its own arena
    that keeps freed 2 MiB chunks: measured after 1 GiB pushes and pulls, a 2-worker tree held
    ~7 MiB less with one arena (docs/benchmarks.md), at the same throughput (Python objects are
    allocated under the GIL, so the shared arena's lock is rarely contended). Same as
    MALLOC_ARENA_MAX=1, which glibc reads only at start-up. A no-op without glibc's mallopt.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, 1)


def command(granian: dict[str, Any], cleanup: str | None) -> list[str]:
    """The argv that runs this supervisor with `granian`'s keyword arguments."""
    spec = {"granian": granian, "cleanup": cleanup}
    return [sys.executable, "-m", "trustyard.supervisor", json.dumps(spec)]


def run(spec: dict[str, Any]) -> None:
    from granian import Granian
    from granian.constants import Interfaces

    one_malloc_arena()  # mallopt does not survive exec: again, before Granian's threads
    args = dict(spec["granian"])
    for name in ("ssl_cert", "ssl_key"):
        args[name] = Path(args[name]) if args.get(name) else None
    try:
        Granian(
            target="trustyard.http.app:worker_app",
            factory=True,
            interface=Interfaces.ASGI,
            log_access=False,
            **args,
        ).serve()
    finally:
        if spec.get("cleanup"):
            shutil.rmtree(spec["cleanup"], ignore_errors=True)


if __name__ == "__main__":
    run(json.loads(sys.argv[1]))
