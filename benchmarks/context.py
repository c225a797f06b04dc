"""What every workload module gets: the mode's sizes, the servers, the results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.servers import REFERENCE, TRUSTYARD, Server
from benchmarks.stats import Results

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Mode:
    name: str
    repeats: int
    blob_bytes: int  # blob push/pull
    stream_bytes: int  # the RSS stream
    chunk_bytes: int  # chunked push
    skopeo_layers: int
    skopeo_layer_bytes: int
    list_sizes: tuple[int, ...]  # tags per repository / repositories in the catalog
    list_samples: int  # page requests per measurement
    wrk_seconds: int
    wrk_repeats: int
    concurrent_pushes: int
    small_layer_bytes: int
    scale_million: bool = False  # the scale family also at 1,000,000 (`--million`: minutes more)


FULL = Mode(
    name="full",
    repeats=3,
    blob_bytes=1 * GiB,
    stream_bytes=2 * GiB,
    chunk_bytes=5 * MiB,
    skopeo_layers=20,
    skopeo_layer_bytes=8 * MiB,
    list_sizes=(100, 10_000),
    list_samples=60,
    wrk_seconds=5,
    wrk_repeats=3,
    concurrent_pushes=50,
    small_layer_bytes=256 * 1024,
)

QUICK = Mode(
    name="quick",
    repeats=2,
    blob_bytes=64 * MiB,
    stream_bytes=128 * MiB,
    chunk_bytes=5 * MiB,
    skopeo_layers=20,
    skopeo_layer_bytes=64 * 1024,
    list_sizes=(100, 1_000),
    list_samples=10,
    wrk_seconds=1,
    wrk_repeats=1,
    concurrent_pushes=50,
    small_layer_bytes=16 * 1024,
)


@dataclass
class Context:
    mode: Mode
    workdir: Path
    servers: dict[str, Server]  # TRUSTYARD and REFERENCE, both running
    results: Results
    log: list[str] = field(default_factory=list)

    def each(self) -> list[tuple[str, Server]]:
        """Both servers, trustyard first; callers interleave repetitions between them."""
        return [(TRUSTYARD, self.servers[TRUSTYARD]), (REFERENCE, self.servers[REFERENCE])]

    def say(self, message: str) -> None:
        print(f"  · {message}", flush=True)
