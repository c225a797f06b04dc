"""Account names are matched as a whole: `$` also matched before a trailing newline, so
`admin user add 'alice\\n'` created a second "alice". The CLI, the account service and a
running token server now refuse such a name and its neighbours (CR, other line breaks,
spaces, NUL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.auth.integration import add_user, cli, fetch_token, token_server
from tests.integration.server import ServerProcess
from trustyard.auth.users import AccountError, Accounts, LoginLimiter, validate_account_name
from trustyard.cache.memory import MemoryCache
from trustyard.metadata.auth_sql import SqlAuthStore
from trustyard.wiring import open_database

BAD_NAMES = [
    "alice\n",
    "alice\r\n",
    "alice\r",
    "alice\n\n",
    "\nalice",
    "al\nice",
    "alice\x0b",
    "alice\u2028",
    "alice ",
    " alice",
    "alice\t",
    "alice\x00",
]


def accounts_in(data: Path) -> set[str]:
    with closing(sqlite3.connect(data / "metadata.db")) as db:
        return {row[0] for row in db.execute("SELECT name FROM auth_accounts")}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_the_pattern_matches_whole_names_only(name: str) -> None:
    with pytest.raises(AccountError, match="invalid name"):
        validate_account_name(name)
    assert validate_account_name("alice") == "alice"


async def test_the_account_service_refuses_users_and_robots(tmp_path: Path) -> None:
    store: SqlAuthStore = (await open_database(tmp_path / "metadata.db", create=True)).auth
    try:
        accounts = Accounts(store, bcrypt_cost=4, limiter=LoginLimiter(cache=MemoryCache()))
        await accounts.add_user("alice", "pw")
        for name in BAD_NAMES:
            with pytest.raises(AccountError, match="invalid name"):
                await accounts.add_user(name, "pw")
            with pytest.raises(AccountError, match="invalid name"):
                await accounts.add_robot("alice", name)
        assert await store.get_account("alice\n") is None
    finally:
        await store.close()


def test_admin_user_add_refuses_a_trailing_newline(tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_user(data, "alice", "alice-pw")
    for name in ("alice\n", "bob\n", "alice\r\n", "carol\n\n"):
        out = cli(data, "user", "add", name, "--password-stdin", stdin="pw\n", check=False)
        assert "invalid name" in out and "Traceback" not in out, out
        assert "created" not in out
    out = cli(data, "group", "add", "devs\n", "alice", check=False)
    assert "invalid name" in out and "Traceback" not in out, out
    assert accounts_in(data) == {"alice"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("names") / "data"
    add_user(data, "alice", "alice-pw")
    srv = token_server(data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT="1000").start()
    yield srv
    srv.stop()


@pytest.mark.parametrize("name", ["alice\n", "alice\r\n", "alice\r", "alice ", "alice\x00"])
def test_the_token_endpoint_refuses_the_name_with_alices_password(
    server: ServerProcess, name: str
) -> None:
    scope = "repository:alice/app:pull,push"
    r = fetch_token(server, scope, auth=(name, "alice-pw"))
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED" and "token" not in r.json()
    form = {
        "grant_type": "password",
        "service": "trustyard",
        "client_id": "test",
        "username": name,
        "password": "alice-pw",
        "scope": scope,
    }
    r = httpx.post(f"{server.url}/auth/token", data=form, timeout=30)
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # alice herself still logs in
    assert fetch_token(server, scope, auth=("alice", "alice-pw")).status_code == 200
