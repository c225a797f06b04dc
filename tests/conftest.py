"""Services started from packages: PostgreSQL and Redis (Debian), an S3 server (moto, PyPI).

Also marks every test by what it needs (`-m "not needs_postgres"`, `make test-fast`) and keeps
the temporary files of tests and the clients they run in one directory removed at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.postgres import Postgres, start_postgres
from tests.services.redis import RedisServer, start_redis
from tests.services.s3 import S3Server, start_s3


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    pg = start_postgres()
    if pg is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run must install it")
        pytest.skip("PostgreSQL is not installed (scripts/install-deps.sh installs it)")
    yield pg
    pg.stop()


@pytest.fixture
def empty_postgres_url(postgres: Postgres) -> str:
    """A fresh database with no schema."""
    return postgres.create_database("t" + uuid.uuid4().hex[:12])


@pytest.fixture
def postgres_url(empty_postgres_url: str) -> str:
    """A fresh database, migrated with `trustyard db upgrade` as an operator would."""
    out = subprocess.run(
        [sys.executable, "-m", "trustyard", "db", "upgrade"],
        env={**os.environ, "TRUSTYARD_DATABASE_URL": empty_postgres_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return empty_postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """Where a metadata database lives, once per SQL backend: a SQLite file in the test's
    directory, or a migrated PostgreSQL database's URL (store contracts, replica tests)."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return tmp_path / "meta.db"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3()
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("moto_server is not installed; .ci/run must install moto[server]")
        pytest.skip("moto_server is not installed (pip install 'moto[server]')")
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A fresh, empty bucket for one test."""
    return s3_server.create_bucket()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis per test: tests stop and restart it to prove the registry survives an outage."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    if server is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run must install it")
        pytest.skip("redis-server is not installed (scripts/install-deps.sh installs it)")
    yield server
    server.stop()


# -- markers, applied by what a test uses --------------------------------------------------------
_FIXTURE_MARKS = {
    "postgres": "needs_postgres",
    "postgres_url": "needs_postgres",
    "empty_postgres_url": "needs_postgres",
    "s3_server": "needs_s3",
    "s3_bucket": "needs_s3",
    "redis_server": "needs_redis",
}
# Contract suites run one test per backend (`params=["sqlite", "postgres"]`).
_PARAM_MARKS = {"postgres": "needs_postgres", "s3": "needs_s3", "redis": "needs_redis"}
# Rootless podman needs /etc/subuid ranges that scripts/install-deps.sh does not set up.
_ROOT_MARKS = ("needs_podman",)
_HERE = Path(__file__).parent


def _starts_servers(item: pytest.Item) -> bool:
    """Tests that run a real `trustyard serve` (tests/integration, or a module importing it)."""
    if _HERE / "integration" in Path(str(item.path)).parents:
        return True
    module = getattr(item, "module", None)
    return (
        any(
            getattr(value, "__module__", "") == "tests.integration.server"
            for value in vars(module).values()
        )
        if module is not None
        else False
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    replicas = os.environ.get("TRUSTYARD_TEST_TOPOLOGY") == "replicas"
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        marks = {mark for fixture, mark in _FIXTURE_MARKS.items() if fixture in names}
        callspec = getattr(item, "callspec", None)
        for value in callspec.params.values() if callspec is not None else ():
            if isinstance(value, str) and value in _PARAM_MARKS:
                marks.add(_PARAM_MARKS[value])
        if replicas and "shared_server" in names:
            marks |= {"needs_postgres", "needs_s3", "needs_redis"}
        if _starts_servers(item):
            marks.add("integration")
        if "podman" in names or any(item.get_closest_marker(n) for n in _ROOT_MARKS):
            marks.add("needs_root")
        for mark in sorted(marks):
            item.add_marker(mark)


# -- temporary files -----------------------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _private_tmpdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Everything tests and their clients put in the temp dir goes to one directory per run.

    `tempfile.mkdtemp` (podman runroots, GnuPG homes, PostgreSQL clusters) and every program
    the tests start (TMPDIR) land there, and it is removed when the session ends, so a run
    leaves nothing behind in /tmp. The path stays short: podman refuses runroots over 50 chars.
    """
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path root stays where it was
    root = Path(tempfile.mkdtemp(prefix="ty-run-"))
    # Others may pass through (not list): initdb runs as the postgres user in its own 0700
    # directory in here when the tests run as root.
    root.chmod(0o711)
    saved_env, saved_dir = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(root)
    tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = saved_dir
        if saved_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved_env
        shutil.rmtree(root, ignore_errors=True)
