"""Services started from packages: PostgreSQL and Redis (Debian), an S3 server (moto, PyPI)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

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
