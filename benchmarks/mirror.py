"""Pull-through mirror: skopeo pulls of a 20-layer image through a trustyard mirror of the
reference registry (cold: nothing cached; warm: everything cached) against pulling it straight
from the reference (wall time, seconds).

The image is pushed to the reference (`docker-registry`); a separate trustyard (1 worker, a
fresh data dir) mirrors it (`[[mirrors]] prefix = "mirror"`, `upstream_prefix = "bench"`).
In the table the trustyard column is the pull through the mirror, the reference column the
direct pull: a ratio below 1 means the mirror is faster than the upstream itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

from benchmarks.context import Context
from benchmarks.servers import REFERENCE, TRUSTYARD, TrustyardServer
from benchmarks.skopeo import _mib, build_layout

FAMILY = (
    "mirror (skopeo pull wall time in seconds, lower is better; trustyard = through the mirror)"
)


class MirrorServer(TrustyardServer):
    upstream: str = ""

    def env(self) -> dict[str, str]:
        mirrors = [{"prefix": "mirror", "upstream": self.upstream, "upstream_prefix": "bench"}]
        return {**super().env(), "TRUSTYARD_MIRRORS": json.dumps(mirrors)}


def _pull(src: str, dest: str) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--src-tls-verify=false", src, dest],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"skopeo copy {src} failed: {out.stderr[-2000:]}")
    return elapsed


def _push(layout: str, dest: str) -> None:
    out = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false", layout, dest],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"skopeo copy to {dest} failed: {out.stderr[-2000:]}")


def run(ctx: Context) -> None:
    mode = ctx.mode
    reference = ctx.servers[REFERENCE]
    title = f"{mode.skopeo_layers} layers x {_mib(mode.skopeo_layer_bytes)}"
    cold = ctx.results.workload(
        "mirror_cold_pull", FAMILY, f"cold pull {title}", "s", higher_is_better=False
    )
    warm = ctx.results.workload(
        "mirror_warm_pull", FAMILY, f"warm pull {title}", "s", higher_is_better=False
    )
    mirror = MirrorServer("mirror", ctx.workdir / "mirror", workers=1)
    mirror.upstream = reference.url
    mirror.start()
    try:
        for rep in range(mode.repeats):
            layout = ctx.workdir / f"mirror-image-{rep}"
            build_layout(layout, mode.skopeo_layers, mode.skopeo_layer_bytes)
            _push(f"oci:{layout}:latest", f"docker://{reference.host}/bench/m{rep}:latest")
            for kind, workload in (("cold", cold), ("warm", warm)):
                for name, src in (
                    (TRUSTYARD, f"docker://{mirror.host}/mirror/m{rep}:latest"),
                    (REFERENCE, f"docker://{reference.host}/bench/m{rep}:latest"),
                ):
                    out = ctx.workdir / f"mirror-pull-{name}-{kind}-{rep}"
                    workload.add(name, _pull(src, f"dir:{out}"))
                    shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(layout, ignore_errors=True)
            ctx.say(f"mirror rep {rep + 1}/{mode.repeats} done")
    finally:
        mirror.stop()
        shutil.rmtree(ctx.workdir / "mirror", ignore_errors=True)
    ctx.results.notes.append(
        "mirror: the reference column is a direct pull from docker-registry (the upstream), "
        f"load average {os.getloadavg()[0]:.2f} after the family"
    )
