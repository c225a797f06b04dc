"""A 20-layer image pushed and pulled with skopeo (wall time, seconds).

Every repetition builds a fresh image (random layers), so skopeo's blob-info cache can never
turn a push into a mount; the same image goes to both servers.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

from benchmarks.api import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, descriptor, sha256
from benchmarks.context import Context

FAMILY = "skopeo (wall time in seconds, lower is better)"


def _layer(size: int) -> bytes:
    """A real tar.gz layer (one file of random bytes; gzip level 0: valid and fast to build)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(f"data-{os.urandom(4).hex()}.bin")
        info.size = size
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return gzip.compress(raw.getvalue(), compresslevel=0, mtime=0)


def build_layout(root: Path, layers: int, layer_bytes: int) -> int:
    """An OCI image layout at `root` tagged `latest`; returns the bytes of its blobs."""
    blobs_dir = root / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True)

    def store(data: bytes) -> None:
        (blobs_dir / sha256(data).split(":", 1)[1]).write_bytes(data)

    layer_blobs = [_layer(layer_bytes) for _ in range(layers)]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {
                "type": "layers",
                "diff_ids": [sha256(gzip.decompress(b)) for b in layer_blobs],
            },
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, b) for b in layer_blobs],
        }
    ).encode()
    for blob in (*layer_blobs, config, manifest):
        store(blob)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                **descriptor(OCI_MANIFEST, manifest),
                "annotations": {"org.opencontainers.image.ref.name": "latest"},
            }
        ],
    }
    (root / "index.json").write_text(json.dumps(index))
    return sum(len(b) for b in layer_blobs) + len(config)


def _skopeo(*args: str) -> float:
    started = time.perf_counter()
    out = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"skopeo copy {' '.join(args)} failed: {out.stderr[-2000:]}")
    return elapsed


def run(ctx: Context) -> None:
    mode = ctx.mode
    title = f"{mode.skopeo_layers} layers x {_mib(mode.skopeo_layer_bytes)}"
    pushed = ctx.results.workload(
        "skopeo_push", FAMILY, f"push {title}", "s", higher_is_better=False
    )
    pulled = ctx.results.workload(
        "skopeo_pull", FAMILY, f"pull {title}", "s", higher_is_better=False
    )
    for rep in range(mode.repeats):
        layout = ctx.workdir / f"skopeo-image-{rep}"
        build_layout(layout, mode.skopeo_layers, mode.skopeo_layer_bytes)
        for name, server in ctx.each():
            ref = f"docker://{server.host}/bench/skopeo-{rep}:latest"
            pushed.add(name, _skopeo("--dest-tls-verify=false", f"oci:{layout}:latest", ref))
            out = ctx.workdir / f"skopeo-pull-{name}-{rep}"
            pulled.add(name, _skopeo("--src-tls-verify=false", ref, f"dir:{out}"))
            shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(layout, ignore_errors=True)
        ctx.say(f"skopeo rep {rep + 1}/{mode.repeats} done")


def _mib(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n // 1024} KiB"
