"""haproxy (Debian package) in front of several trustyard replicas, round robin per request."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.server import free_port

CONFIG = """
global
    maxconn 512
defaults
    mode http
    timeout connect 5s
    # A health check may take longer than its interval on a loaded machine (/readyz asks the
    # database, S3 and Redis); without this, haproxy times checks out after `inter`.
    timeout check 5s
    timeout client 120s
    timeout server 120s
    option http-server-close
    retries 3
    option redispatch 1
frontend registry
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET {check_path}
{servers}
"""


@dataclass
class Haproxy:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_haproxy(
    tmp: Path, backend_ports: list[int], check_path: str = "/readyz"
) -> Haproxy | None:
    """haproxy in front of `backend_ports`, checking each with `GET check_path` (trustyard's
    readiness probe; the reference registry, which has none, is checked on `/v2/`)."""
    exe = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if exe is None:
        return None
    port = free_port()
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check inter 500ms" for i, p in enumerate(backend_ports)
    )
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(CONFIG.format(port=port, servers=servers, check_path=check_path))
    proc = subprocess.Popen(
        [exe, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1).status_code == 200:
                return Haproxy(proc, port)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("haproxy did not start")
