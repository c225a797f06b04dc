"""The README's first command, `make serve`, on the stock Debian path (issue 17).

CI (.ci/run) puts /usr/bin first on PATH, so Debian 12's python3 (3.11, PEP 668) makes the
project venv; this test starts `make serve` the same way on a free port with a temp data dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import free_port

ROOT = Path(__file__).resolve().parents[2]
STOCK_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


def _stock_venv() -> str:
    """The checkout's .venv when Debian's python3 made it (CI), else a separate one, reused.

    A developer's .venv made by another Python is left alone: this test must not replace the
    interpreter the test run itself may be using.
    """
    made = ROOT / ".venv" / ".made-with"
    if made.exists() and made.read_text().strip().startswith("/usr/bin/python3"):
        return ".venv"
    return ".venv-debian"


@pytest.fixture
def stock_env(tmp_path: Path) -> dict[str, str]:
    if not Path("/usr/bin/python3").exists() or shutil.which("make", path=STOCK_PATH) is None:
        pytest.skip("needs Debian's /usr/bin/python3 and make")
    return {
        "PATH": STOCK_PATH,
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        **{k: v for k, v in os.environ.items() if k.startswith("PIP_")},
    }


@pytest.fixture
def make_serve(stock_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, venv = free_port(), _stock_venv()
    log = tmp_path / "make-serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["make", "serve", f"PORT={port}", f"DATA_DIR={tmp_path / 'data'}", f"VENV={venv}"],
            cwd=ROOT,
            env=stock_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 900  # the first run makes the venv and installs
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"make serve exited {proc.returncode}:\n{log.read_text()}"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"make serve did not answer:\n{log.read_text()[-3000:]}")
        yield port, ROOT / venv
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_make_serve_with_debian_python_first_on_path(
    make_serve: tuple[int, Path], stock_env: dict[str, str], tmp_path: Path
) -> None:
    port, venv = make_serve
    r = httpx.get(f"http://127.0.0.1:{port}/v2/")
    assert r.status_code == 200 and r.json() == {}
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert (venv / ".made-with").read_text().strip().startswith("/usr/bin/python3")
    assert (tmp_path / "data" / "metadata.db").exists()  # DATA_DIR was used
    # The next run reuses the venv: no pip, no Python started before trustyard itself.
    started = time.monotonic()
    again = subprocess.run(
        ["make", "-s", "venv", f"VENV={venv.name}"],
        cwd=ROOT,
        env=stock_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and again.stdout == "" and again.stderr == ""
    assert time.monotonic() - started < 5


def test_missing_python3_venv_is_named_with_its_install_line() -> None:
    """Debian's python3 without python3-venv, as a normal user: one line saying what to install."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("needs Debian's /usr/bin/python3")
    # A checkout copy the user may write to, and an `ensurepip` that is not there (as on a
    # stock Debian 12 without python3-venv: the module lives in that package).
    work = Path(tempfile.mkdtemp(prefix="ty-venvtest-", dir="/tmp"))
    try:
        work.chmod(0o777)
        (work / "scripts").mkdir()
        shutil.copy(ROOT / "scripts" / "venv.sh", work / "scripts")
        shutil.copy(ROOT / "pyproject.toml", work)
        fake = work / "no-ensurepip" / "ensurepip"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("raise ImportError('python3-venv is not installed')\n")
        cmd = ["bash", str(work / "scripts" / "venv.sh"), "serve"]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "nobody", "--", *cmd]
        out = subprocess.run(
            cmd,
            env={
                "PATH": STOCK_PATH,
                "PYTHONPATH": str(fake.parent),
                "PYTHON": "python3",
                "HOME": str(work),
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 1, out.stdout + out.stderr
        assert "apt-get install python3-venv" in out.stderr
        assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
        assert not (work / ".venv").exists()
    finally:
        shutil.rmtree(work, ignore_errors=True)
