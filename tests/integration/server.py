"""A real `trustyard serve` process on a free loopback port, for integration tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Ports for servers the tests start: below the kernel's ephemeral range (32768-60999 here), so
# no outgoing connection takes one between our pick and the server's bind, and one block per
# pytest-xdist worker, so two workers never pick the same port before either has bound it (a
# server that then failed to bind could answer our probe with the other worker's server).
_PORT_BLOCK = 1500
_PORT_BASE = 20000


def free_port() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    block = int(worker) % 8 if worker.isdigit() else 0
    first = _PORT_BASE + block * _PORT_BLOCK
    start = random.randrange(_PORT_BLOCK)
    for i in range(_PORT_BLOCK):
        port = first + (start + i) % _PORT_BLOCK
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the whole block is taken: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve HTTPS
    # Readiness probe: what to GET and which answers mean "up" (auth modes answer /v2/ with 401;
    # a token issuer alone has no /v2/ at all).
    ready_path: str = "/v2/"
    ready_statuses: tuple[int, ...] = (200,)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.tls[0])) if self.tls else True

    @property
    def host(self) -> str:
        """host:port, as container clients write registry references."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")}
        env.update(self.extra_env)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        tls_args = (
            ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])] if self.tls else []
        )
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "trustyard",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *tls_args,
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"trustyard serve exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                probe = httpx.get(self.url + self.ready_path, timeout=1, verify=self.verify)
                if probe.status_code in self.ready_statuses:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"trustyard serve did not answer in 30 s:\n{self.log()}")

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace")[-5000:]
            if self.log_path and self.log_path.exists()
            else ""
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, as far as the data is concerned."""
        self.stop(signal.SIGKILL)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()
