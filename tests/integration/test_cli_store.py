"""`trustyard gc` and `trustyard admin` find the server's store, or say plainly they did not.

Before issue 17, `make serve` kept its data in ./trustyard-data while the CLI defaulted to
~/.local/share/trustyard: `trustyard gc` quietly created an empty store there and reported
"nothing to free". Now both use the same default, every command names its store, and a data
dir without a store is refused (only the `add` commands create one, and say so).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.images import make_image, push_image
from tests.integration.server import free_port


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRUSTYARD") and k not in ("XDG_DATA_HOME", "HOME")
    }
    return {**env, "HOME": str(home), "TRUSTYARD_AUTH__BCRYPT_COST": "4", **extra}


def trustyard(
    home: Path, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=_env(home, **env),
        timeout=120,
    )


@pytest.fixture
def default_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`trustyard serve` with no --data-dir, as `make serve` runs it; HOME is a temp dir."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "trustyard", "serve", "--port", str(port)],
        env=_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(url + "/v2/", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        yield url, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def test_gc_without_flags_finds_the_store_the_server_uses(
    default_server: tuple[str, Path],
) -> None:
    url, home = default_server
    store = home / ".local" / "share" / "trustyard"
    with httpx.Client(base_url=url, timeout=30) as c:
        digest = push_image(c, "team/app", make_image(), "temp")
        assert c.delete("/v2/team/app/manifests/temp").status_code == 202
    out = trustyard(home, "gc", "--dry-run", "--grace-seconds", "0")
    assert out.returncode == 0, out.stderr
    assert f"store: {store}" in out.stderr
    assert f"would delete manifest team/app@{digest}" in out.stdout
    # XDG_DATA_HOME moves the default for the server and the CLI alike.
    moved = trustyard(home, "gc", "--dry-run", XDG_DATA_HOME=str(home / "elsewhere"))
    assert moved.returncode == 1 and f"no trustyard store at {home / 'elsewhere'}" in moved.stderr


def test_gc_refuses_a_data_dir_without_a_store_and_creates_nothing(tmp_path: Path) -> None:
    out = trustyard(tmp_path, "gc")
    default = tmp_path / ".local" / "share" / "trustyard"
    assert out.returncode == 1
    assert f"store: {default}" in out.stderr
    assert f"error: no trustyard store at {default}" in out.stderr
    assert "default data dir" in out.stderr and "Traceback" not in out.stderr
    assert "nothing to free" not in out.stdout and "freed" not in out.stdout
    assert not default.exists()
    # A typo'd --data-dir (an existing but empty directory, or a missing one) is refused too.
    (tmp_path / "typo").mkdir()
    for where in (tmp_path / "typo", tmp_path / "missing"):
        out = trustyard(tmp_path, "gc", "--dry-run", "--data-dir", str(where))
        assert out.returncode == 1 and f"no trustyard store at {where}" in out.stderr
        assert "--data-dir" in out.stderr
        assert not (where / "metadata.db").exists()


def test_gc_on_a_store_without_repositories_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = trustyard(
        tmp_path, "admin", "--data-dir", str(data), "acl", "add", "anonymous", "x/*", "pull"
    )
    assert created.returncode == 0, created.stderr
    out = trustyard(tmp_path, "gc", "--data-dir", str(data))
    assert out.returncode == 0, out.stderr
    assert "holds no repositories" in out.stderr and "another store" in out.stderr


def test_admin_names_its_store_and_creates_one_only_when_adding(tmp_path: Path) -> None:
    data = tmp_path / "data"
    listed = trustyard(tmp_path, "admin", "--data-dir", str(data), "user", "list")
    assert listed.returncode == 1 and "admin user list has nothing to work on" in listed.stderr
    assert not (data / "metadata.db").exists()
    for args in (("user", "del", "alice"), ("acl", "list"), ("user", "disable", "alice")):
        refused = trustyard(tmp_path, "admin", "--data-dir", str(data), *args)
        assert refused.returncode == 1 and "no trustyard store" in refused.stderr, args
    assert not (data / "metadata.db").exists()
    added = trustyard(
        tmp_path, "admin", "--data-dir", str(data), "user", "add", "alice", "--password-stdin",
        stdin="pw-alice\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "created a new, empty one" in added.stderr and (data / "metadata.db").exists()
    listed = trustyard(tmp_path, "admin", "--data-dir", str(data), "user", "list")
    assert listed.returncode == 0 and "alice" in listed.stdout
    assert f"store: {data}" in listed.stderr and "created" not in listed.stderr


def test_database_url_is_named_without_its_password(tmp_path: Path) -> None:
    out = trustyard(
        tmp_path, "gc", TRUSTYARD_DATABASE_URL="postgresql://ty:s3cret-pw@127.0.0.1:1/registry"
    )
    assert out.returncode == 1
    assert "store: postgresql://ty:***@127.0.0.1:1/registry" in out.stderr
    assert "cannot open the store" in out.stderr
    assert "s3cret-pw" not in out.stderr + out.stdout and "Traceback" not in out.stderr


def test_an_unreachable_database_is_one_line_in_every_store_command(tmp_path: Path) -> None:
    """Commands that do not word it themselves (admin, scrub) still end in one line, exit 1
    or 2, never a traceback (cli.main turns the backends' own errors into `error: ...`)."""
    url = "postgresql://ty:s3cret-pw@127.0.0.1:1/registry"
    for args in (("admin", "user", "list"), ("admin", "acl", "list"), ("scrub",)):
        out = trustyard(tmp_path, *args, TRUSTYARD_DATABASE_URL=url)
        assert out.returncode in (1, 2), (args, out.stderr)
        assert "database is unavailable" in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr and "s3cret-pw" not in out.stderr + out.stdout
