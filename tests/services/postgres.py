"""A throwaway PostgreSQL server (Debian's binaries, initdb in a temp dir) for tests."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.server import free_port


def _bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@dataclass
class Postgres:
    root: Path
    port: int
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run_as_postgres(self, *cmd: str) -> subprocess.CompletedProcess[str]:
        # initdb refuses to run as root; Debian's postgresql package provides the user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *cmd], capture_output=True, text=True, check=True, timeout=120
        )

    def create_database(self, name: str) -> str:
        self._run_as_postgres(
            str(self.bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-c",
            f'CREATE DATABASE "{name}"',
        )
        return self.url_for(name)

    def _pg_ctl(self, *args: str) -> None:
        self._run_as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.root / "data"), *args)

    def pause(self) -> None:
        """Stop the server, keeping its data (an outage)."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._pg_ctl(
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            "start",
        )

    def stop(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            ]
            if os.geteuid() == 0
            else [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.root / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> Postgres | None:
    """Start a server on a free port; None when PostgreSQL is not installed."""
    bindir = _bindir()
    if bindir is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="ty-pg-"))
    if os.geteuid() == 0:
        uid = pwd.getpwnam("postgres").pw_uid
        os.chown(root, uid, -1)
    pg = Postgres(root, free_port(), bindir)
    pg._run_as_postgres(
        str(bindir / "initdb"),
        "-D",
        str(root / "data"),
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-sync",
    )
    pg._run_as_postgres(
        str(bindir / "pg_ctl"),
        "-D",
        str(root / "data"),
        "-l",
        str(root / "log"),
        "-w",
        "-t",
        "60",
        "-o",
        f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
        "start",
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg.port)], capture_output=True
        )
        if ready.returncode == 0:
            return pg
        time.sleep(0.2)
    raise RuntimeError("PostgreSQL did not become ready")
