"""The lockout against a running server: 60 concurrent wrong passwords for one account, through
the token endpoint (GET and the OAuth2 POST), htpasswd Basic mode, and two workers sharing
Redis. At most the limit (5) is checked; the rest, and then the right password, get 429."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import httpx
import pytest

from tests.auth.integration import AuthServerProcess
from tests.integration.server import ServerProcess
from tests.services.redis import RedisServer

pytestmark = [pytest.mark.slow]

# Hashes at cost 10 (~60 ms per check here): wide enough that 60 checks really overlap.
SLOW = {"TRUSTYARD_AUTH__BCRYPT_COST": "10"}
LIMITS = {
    "TRUSTYARD_AUTH__MAX_FAILED_LOGINS": "5",
    "TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT": "1000",
}


def add_user(data: Path, name: str, password: str) -> None:
    subprocess.run(
        [
            *(sys.executable, "-m", "trustyard", "admin", "--data-dir", str(data)),
            *("user", "add", name, "--password-stdin"),
        ],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")}, **SLOW},
        timeout=60,
    )


Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


async def burst(n: int, send: Send) -> list[int]:
    async with httpx.AsyncClient(timeout=120) as client:
        responses = await asyncio.gather(*(send(client) for _ in range(n)))
    return [r.status_code for r in responses]


def token_get(srv: ServerProcess, user: str, password: str) -> Send:
    def send(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.get(
            f"{srv.url}/auth/token",
            params={"service": "trustyard", "scope": f"repository:{user}/app:pull"},
            auth=(user, password),
        )

    return send


def assert_burst_limited(statuses: list[int]) -> None:
    assert sorted(set(statuses)) == [401, 429], statuses
    assert statuses.count(401) == 5 and statuses.count(429) == 55, statuses


@pytest.fixture
def accounts(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    add_user(data, "alice", "alice-right-pw")
    add_user(data, "bob", "bob-pw")
    return data


def check_after_burst(srv: ServerProcess) -> None:
    """The right password is refused for the window; another account is not affected."""
    right = httpx.get(
        f"{srv.url}/auth/token", params={"service": "trustyard"}, auth=("alice", "alice-right-pw")
    )
    assert right.status_code == 429, right.text
    assert right.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert 250 <= int(right.headers["retry-after"]) <= 300
    assert "try again in" in right.json()["errors"][0]["message"]
    # The OAuth2 password grant is the same door.
    post = httpx.post(
        f"{srv.url}/auth/token",
        data={"grant_type": "password", "username": "alice", "password": "alice-right-pw"},
    )
    assert post.status_code == 429, post.text
    bob = httpx.get(
        f"{srv.url}/auth/token", params={"service": "trustyard"}, auth=("bob", "bob-pw")
    )
    assert bob.status_code == 200, bob.text


def test_token_endpoint_burst(accounts: Path) -> None:
    srv = AuthServerProcess(
        accounts, extra_env={"TRUSTYARD_AUTH__MODE": "token", **SLOW, **LIMITS}
    ).start()
    try:
        assert_burst_limited(asyncio.run(burst(60, token_get(srv, "alice", "wrong"))))
        check_after_burst(srv)
        assert "alice-right-pw" not in srv.log() and "wrong" not in srv.log().replace(
            "wrong password", ""
        )
    finally:
        srv.stop()


def test_token_endpoint_post_burst(accounts: Path) -> None:
    srv = AuthServerProcess(
        accounts, extra_env={"TRUSTYARD_AUTH__MODE": "token", **SLOW, **LIMITS}
    ).start()

    def send(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.post(
            f"{srv.url}/auth/token",
            data={"grant_type": "password", "username": "alice", "password": "guess"},
        )

    try:
        assert_burst_limited(asyncio.run(burst(60, send)))
        check_after_burst(srv)
    finally:
        srv.stop()


def test_two_workers_share_the_limit_through_redis(
    accounts: Path, redis_server: RedisServer
) -> None:
    srv = AuthServerProcess(
        accounts,
        extra_env={
            "TRUSTYARD_AUTH__MODE": "token",
            "TRUSTYARD_REDIS_URL": redis_server.url,
            **SLOW,
            **LIMITS,
        },
        extra_args=["--workers", "2"],
    ).start()
    try:
        assert_burst_limited(asyncio.run(burst(60, token_get(srv, "alice", "wrong"))))
        for _ in range(4):  # whichever worker answers
            check_after_burst(srv)
    finally:
        srv.stop()


def test_htpasswd_basic_burst(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"carol-pw", bcrypt.gensalt(rounds=10)).decode()
    path.write_text(f"carol:{hashed}\n")
    srv = AuthServerProcess(
        tmp_path / "data",
        extra_env={
            "TRUSTYARD_AUTH__MODE": "htpasswd",
            "TRUSTYARD_AUTH__HTPASSWD": str(path),
            **LIMITS,
        },
    ).start()

    def send(client: httpx.AsyncClient) -> Awaitable[httpx.Response]:
        return client.get(f"{srv.url}/v2/", auth=("carol", "guess"))

    try:
        assert_burst_limited(asyncio.run(burst(60, send)))
        right = httpx.get(f"{srv.url}/v2/", auth=("carol", "carol-pw"))
        assert right.status_code == 429 and "retry-after" in right.headers, right.text
        # Neighbours: the catalog and a repository route are behind the same check.
        for path_ in ("/v2/_catalog", "/v2/carol/app/tags/list"):
            assert httpx.get(f"{srv.url}{path_}", auth=("carol", "carol-pw")).status_code == 429
    finally:
        srv.stop()
