"""The first read of a GUN's server key through `trustyard serve --workers 2` (token mode),
and through two replicas on one PostgreSQL database: 32 concurrent GETs, spread over the
worker processes or replicas, all get the same key and the database holds one key per role."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.auth.integration import add_user, bearer, cli, token, token_server
from tests.integration.server import ServerProcess

PUSHER = ("pusher", "pusher-pw")
CONCURRENT = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("firstkey") / "data"
    add_user(data, *PUSHER)
    cli(data, "acl", "add", "pusher", "race/*", "pull,push")
    srv = token_server(data)
    srv.extra_args = ["--workers", "2"]
    srv.start()
    yield srv
    srv.stop()


def stored_keys(srv: ServerProcess, gun: str) -> dict[str, int]:
    db = sqlite3.connect(f"file:{srv.data_dir / 'metadata.db'}?mode=ro", uri=True)
    with closing(db):
        rows = db.execute(
            "SELECT role, count(*) FROM tuf_server_keys WHERE gun = ? GROUP BY role", (gun,)
        ).fetchall()
    return {role: int(n) for role, n in rows}


def first_reads(
    srv: ServerProcess, gun: str, role: str, *others: ServerProcess
) -> list[dict[str, Any]]:
    """CONCURRENT GETs released together, each on its own connection (so both workers serve),
    spread over `srv` and `others` (replicas, no auth)."""
    servers = [srv, *others]
    headers = {} if others else bearer(token(srv, f"repository:{gun}:pull,push", auth=PUSHER))
    barrier = threading.Barrier(CONCURRENT)

    def get(i: int) -> dict[str, Any]:
        base = servers[i % len(servers)].url
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            barrier.wait()
            r = c.get(f"/v2/{gun}/_trust/tuf/{role}.key")
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

    with ThreadPoolExecutor(CONCURRENT) as pool:
        return list(pool.map(get, range(CONCURRENT)))


@pytest.mark.parametrize("round_", range(4))
def test_concurrent_first_reads_across_workers_share_one_key(
    server: ServerProcess, round_: int
) -> None:
    gun = f"race/app{round_}"
    for role in ("timestamp", "snapshot"):
        answers = first_reads(server, gun, role)
        assert all(a == answers[0] for a in answers), {a["keyval"]["public"] for a in answers}
        assert answers[0]["keyval"]["private"] is None
    assert stored_keys(server, gun) == {"timestamp": 1, "snapshot": 1}
    # Later reads (any worker) keep answering with that key.
    with httpx.Client(
        base_url=server.url,
        headers=bearer(token(server, f"repository:{gun}:pull,push", auth=PUSHER)),
        timeout=30,
    ) as c:
        again = {c.get(f"/v2/{gun}/_trust/tuf/timestamp.key").text for _ in range(8)}
    assert len(again) == 1


async def _count_pg(url: str, gun: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT role, count(*) AS n FROM tuf_server_keys WHERE gun = $1 GROUP BY role", gun
        )
    finally:
        await conn.close()
    return {r["role"]: int(r["n"]) for r in rows}


def test_concurrent_first_reads_across_postgres_replicas_share_one_key(
    postgres_url: str, tmp_path: Path
) -> None:
    env = {
        "TRUSTYARD_DATABASE_URL": postgres_url,
        "TRUSTYARD_TRUST__KEY_PASSPHRASE": "replicas-share-this",
    }
    replicas = [ServerProcess(tmp_path / f"replica{i}", extra_env=env) for i in range(2)]
    try:
        for r in replicas:
            r.start()
        for round_ in range(3):
            gun = f"race/pg{round_}"
            for role in ("timestamp", "snapshot"):
                answers = first_reads(replicas[0], gun, role, replicas[1])
                assert all(a == answers[0] for a in answers)
            assert asyncio.run(_count_pg(postgres_url, gun)) == {"timestamp": 1, "snapshot": 1}
    finally:
        for r in replicas:
            r.stop()
