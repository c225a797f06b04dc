"""Start trustyard and the reference registry (`docker-registry`) on free loopback ports.

Each server runs in its own process group; memory is read from /proc for the whole process
tree (Granian's supervisor and its workers), so no third-party process library is needed.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.http1 import Connection

TRUSTYARD = "trustyard"
REFERENCE = "reference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(pid: int) -> list[int]:
    tree = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process; PSS splits pages shared with forked siblings among them."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


@dataclass
class Memory:
    """Peak memory of a process tree, sampled while a workload runs (MiB).

    Granian forks its workers, so they share many pages with the supervisor: the sum of RSS
    counts those pages once per process, the sum of PSS counts them once in all.
    """

    tree_pss_mib: float = 0.0  # sum of PSS over the tree: the tree's real footprint
    tree_rss_mib: float = 0.0  # sum of RSS over the tree (shared pages counted repeatedly)
    largest_mib: float = 0.0  # RSS of the largest single process
    baseline_mib: float = 0.0  # tree PSS before the workload


class RssSampler:
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak = Memory()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._pids: list[int] = []

    def _sample(self) -> tuple[float, float, float]:
        values = [_memory_kib(p) for p in self._pids]
        rss = [v[0] for v in values]
        return sum(v[1] for v in values) / 1024, sum(rss) / 1024, max(rss, default=0) / 1024

    def _run(self) -> None:
        refresh = 0.0
        while not self._stop.is_set():
            if time.monotonic() > refresh:
                self._pids = process_tree(self.pid)
                refresh = time.monotonic() + 1.0
            pss, rss, largest = self._sample()
            self.peak.tree_pss_mib = max(self.peak.tree_pss_mib, pss)
            self.peak.tree_rss_mib = max(self.peak.tree_rss_mib, rss)
            self.peak.largest_mib = max(self.peak.largest_mib, largest)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._pids = process_tree(self.pid)
        self.peak.baseline_mib = self._sample()[0]
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Server:
    name: str
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    label: str = ""

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    # What `GET /v2/` answers once the server is up (401 where every request needs a token).
    READY_STATUS = 200

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def connect(self) -> Connection:
        return Connection("127.0.0.1", self.port)

    def start(self) -> Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "server.log").open("ab")
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with self.connect() as c:
                    if c.request("GET", "/v2/").status == self.READY_STATUS:
                        time.sleep(0.3)  # let every worker finish starting
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer in 60 s:\n{self.log()}")

    def log(self) -> str:
        path = self.workdir / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def rss(self) -> RssSampler:
        return RssSampler(self.pid)


@dataclass
class TrustyardServer(Server):
    workers: int = 2

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "trustyard",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
        ]

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")}


REFERENCE_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
catalog:
  maxentries: 10000
"""


@dataclass
class ReferenceServer(Server):
    """CNCF Distribution (Debian `docker-registry`): filesystem driver, its default cache."""

    def command(self) -> list[str]:
        config = self.workdir / "config.yml"
        config.write_text(REFERENCE_CONFIG.format(root=self.data_dir, port=self.port))
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        return [binary, "serve", str(config)]

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}


def reference_version() -> str:
    binary = shutil.which("docker-registry")
    if binary is None:
        return "not installed"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or out.stderr.strip()
