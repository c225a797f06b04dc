"""Serve a static export with Debian's nginx (non-root-friendly paths, a free loopback port)."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.integration.conftest import require
from tests.integration.test_scrub import trustyard


def export(dest: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return trustyard("export", "static", str(dest), "--data-dir", str(data_dir), *args)


def exported(dest: Path, data_dir: Path, *args: str) -> str:
    done = export(dest, data_dir, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@dataclass
class Nginx:
    """nginx with a minimal nginx.conf whose http block includes the export's server block."""

    export_dir: Path
    work: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> Nginx:
        self.work.mkdir(parents=True, exist_ok=True)
        w = self.work
        # As root (CI), workers would drop to `nobody`, who cannot enter pytest's 0700 tmp dirs.
        user = "user root root;\n" if os.geteuid() == 0 else ""
        conf = w / "nginx.conf"
        conf.write_text(
            f"{user}daemon off;\npid {w}/nginx.pid;\nerror_log {w}/error.log;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"    access_log {w}/access.log;\n"
            + "".join(
                f"    {kind}_temp_path {w}/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + f"    include {self.export_dir}/nginx.conf;\n"
            "}\n"
        )
        exe = require("nginx")
        check = subprocess.run(
            [exe, "-t", "-c", str(conf), "-p", str(w)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf), "-p", str(w)], stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not answer: {(w / 'error.log').read_text()}")

    def reload(self, probe: str = "/v2/") -> None:
        """Pick up a regenerated config (new manifests have new rules); wait until `probe`
        answers 200 (reload is asynchronous)."""
        assert self.proc is not None
        exe = require("nginx")
        conf = self.work / "nginx.conf"
        subprocess.run([exe, "-c", str(conf), "-p", str(self.work), "-s", "reload"], check=True)
        deadline = time.monotonic() + 15
        time.sleep(0.3)
        while httpx.head(self.url + probe, timeout=5).status_code != 200:
            assert time.monotonic() < deadline, f"nginx never served {probe} after reload"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)
