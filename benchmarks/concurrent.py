"""50 concurrent pushes of small images (config + 2 layers + manifest), and the memory it takes.

Each client has its own connection and pushes to its own repository; the figure is images/s
for the whole batch, with the number of failed pushes beside it.
"""

from __future__ import annotations

import threading
import time

from benchmarks.api import push_image, small_image
from benchmarks.blobs import MEMORY, add_memory
from benchmarks.context import Context

FAMILY = "Concurrent pushes (images/s, higher is better)"


def run(ctx: Context) -> None:
    mode = ctx.mode
    n = mode.concurrent_pushes
    w = ctx.results.workload(
        "concurrent_pushes",
        FAMILY,
        f"{n} concurrent pushes, 2 x {mode.small_layer_bytes // 1024} KiB layers",
        "images/s",
    )
    rss = ctx.results.workload(
        "rss_concurrent_pushes",
        MEMORY,
        f"during {n} concurrent pushes",
        "MiB",
        higher_is_better=False,
    )
    for rep in range(mode.repeats):
        images = [small_image(mode.small_layer_bytes) for _ in range(n)]
        for name, server in ctx.each():
            errors: list[str] = []
            barrier = threading.Barrier(n + 1)

            def push(
                i: int,
                server=server,
                errors=errors,
                barrier=barrier,
                rep=rep,
                images=images,
            ) -> None:
                with server.connect() as conn:
                    barrier.wait()
                    try:
                        push_image(conn, f"bench/concurrent-{rep}-{i}", "latest", images[i])
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])

            threads = [threading.Thread(target=push, args=(i,)) for i in range(n)]
            with server.rss() as sampler:
                for t in threads:
                    t.start()
                barrier.wait()
                started = time.perf_counter()
                for t in threads:
                    t.join()
                elapsed = time.perf_counter() - started
            w.add(name, n / elapsed, errors=len(errors), seconds=elapsed)
            add_memory(rss, name, sampler)
            if errors:
                ctx.results.notes.append(f"{name}: {len(errors)} failed pushes, e.g. {errors[0]}")
        ctx.say(f"concurrent pushes rep {rep + 1}/{mode.repeats} done")
