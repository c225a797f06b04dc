"""The scaled-out topology: replicas over PostgreSQL + S3 + Redis, behind haproxy.

It answers like a single `ServerProcess` (url, host, log, log_path), so client suites written
for one server run unchanged against it (TRUSTYARD_TEST_TOPOLOGY=replicas).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.server import ServerProcess
from tests.services.haproxy import Haproxy, start_haproxy
from tests.services.postgres import Postgres
from tests.services.redis import RedisServer, start_redis
from tests.services.s3 import S3Server


@dataclass
class Topology:
    root: Path
    replicas: list[ServerProcess] = field(default_factory=list)
    proxy: Haproxy | None = None
    redis: RedisServer | None = None

    @property
    def url(self) -> str:
        assert self.proxy is not None
        return self.proxy.url

    @property
    def host(self) -> str:
        assert self.proxy is not None
        return self.proxy.host

    def log(self) -> str:
        return "\n".join(r.log() for r in self.replicas)

    @property
    def log_path(self) -> Path:
        """Every replica's log, gathered into one file."""
        combined = self.root / "replicas.log"
        combined.write_text(
            "\n".join(r.log_path.read_text(errors="replace") for r in self.replicas if r.log_path)
        )
        return combined

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        for r in self.replicas:
            r.stop()
        if self.redis is not None:
            self.redis.stop()


def start_topology(root: Path, postgres: Postgres, s3: S3Server, replicas: int = 2) -> Topology:
    db_url = postgres.create_database("topo" + uuid.uuid4().hex[:10])
    upgrade = subprocess.run(
        [sys.executable, "-m", "trustyard", "db", "upgrade"],
        env={**os.environ, "TRUSTYARD_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    topo = Topology(root)
    topo.redis = start_redis(root)
    env = {"TRUSTYARD_DATABASE_URL": db_url, **s3.env(s3.create_bucket(), redirect=True)}
    if topo.redis is not None:
        env["TRUSTYARD_REDIS_URL"] = topo.redis.url
    topo.replicas = [
        ServerProcess(root / f"replica{i}", extra_env=env).start() for i in range(replicas)
    ]
    topo.proxy = start_haproxy(root, [r.port for r in topo.replicas])
    assert topo.proxy is not None, "haproxy is required for the replicas topology"
    return topo
