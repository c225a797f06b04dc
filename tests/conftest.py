"""Session-wide services started from Debian packages (PostgreSQL today)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.services.postgres import Postgres, start_postgres


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
def postgres_url(postgres: Postgres) -> str:
    """A fresh, empty database for one test."""
    return postgres.create_database("t" + uuid.uuid4().hex[:12])
