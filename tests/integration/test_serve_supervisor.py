"""`trustyard serve` execs a lean Granian supervisor (trustyard/supervisor.py), real processes.

The supervisor must not hold the application's imports (issue 24: one worker should not cost
two interpreters full of them), yet serve, stop gracefully and clean up as before.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.integration.server import ServerProcess

_HEAVY = ("trustyard.http", "trustyard.wiring", "sqlalchemy", "starlette", "cryptography")


def _modules_after_import() -> set[str]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, granian, trustyard.supervisor; print(json.dumps(list(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(done.stdout))


def test_the_supervisor_imports_none_of_the_application() -> None:
    modules = _modules_after_import()
    heavy = sorted(m for m in modules if m.split(".")[0] in _HEAVY or m.startswith(_HEAVY))
    assert heavy == []


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode().split("=", 1) for e in raw if b"=" in e)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def test_serve_runs_a_lean_supervisor_and_stops_cleanly(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data").start()  # metrics on by default
    try:
        assert server.proc is not None
        pid = server.proc.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"trustyard.supervisor" in cmdline  # `serve` exec'd into it: same pid
        metrics_dir = Path(_environ(pid)["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_dir()
        assert len(_children(pid)) == 1  # the default single worker
        assert httpx.get(server.url + "/v2/").status_code == 200
        assert "trustyard" in httpx.get(server.url + "/metrics").text
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        assert not metrics_dir.exists()  # the supervisor removed what serve made
    finally:
        server.stop()


def test_several_workers_fork_from_serve_and_stop_cleanly(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    server = ServerProcess(
        tmp_path / "data", extra_args=["--workers", "2"], extra_env={"TMPDIR": str(tmp)}
    ).start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline and b"trustyard.supervisor" not in cmdline
        (metrics_dir,) = tmp.glob("trustyard-metrics-*")  # set after start: not in environ
        assert len(_children(pid)) == 2
        assert httpx.get(server.url + "/v2/").status_code == 200
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=15) == 0
        assert not metrics_dir.exists()
    finally:
        server.stop()
