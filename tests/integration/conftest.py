"""Fixtures: real trustyard servers and small OCI images built without an engine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import ServerProcess
from tests.services.topology import Topology, start_topology


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh registry per test (own data dir and port)."""
    srv = ServerProcess(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess | Topology]:
    """One registry for a whole module, for tests that use their own repository names.

    With TRUSTYARD_TEST_TOPOLOGY=replicas it is two replicas over PostgreSQL + S3 + Redis
    behind haproxy instead, so the client suites prove the scaled-out deployment too.
    """
    root = tmp_path_factory.mktemp("shared")
    srv: ServerProcess | Topology
    if os.environ.get("TRUSTYARD_TEST_TOPOLOGY") == "replicas":
        srv = start_topology(
            root, request.getfixturevalue("postgres"), request.getfixturevalue("s3_server")
        )
    else:
        srv = ServerProcess(root / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def require(tool: str) -> str:
    """Path of a client tool; .ci/run installs them all, so a missing one is a failure in CI."""
    import os

    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed; .ci/run must install it")
        pytest.skip(f"{tool} is not installed (install it: see .ci/run)")
    return path
