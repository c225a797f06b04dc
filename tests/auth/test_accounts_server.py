"""Accounts against a running token-auth server: names from an `auth.htpasswd` file that
`admin user add` would refuse cannot log in (a `+` name posing as a robot, a `/` name posing as
someone's namespace), and a hash of an older bcrypt cost is upgraded by the next login."""

from __future__ import annotations

import base64
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import bcrypt
import httpx

from tests.auth.integration import add_user, cli, fetch_token, token_server
from tests.integration.server import ServerProcess


def access(tok: str) -> list[dict[str, Any]]:
    payload = tok.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return list(claims["access"])


def stored_hash(srv: ServerProcess, name: str) -> str:
    with closing(sqlite3.connect(srv.data_dir / "metadata.db")) as db:
        row = db.execute("SELECT secret_hash FROM auth_accounts WHERE name = ?", (name,))
        return str(row.fetchone()[0])


def test_htpasswd_names_and_cost_upgrade(tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_user(data, "alice", "alice-pw")  # created at cost 4 by the CLI helper
    add_user(data, "team", "team-pw")
    cli(data, "acl", "add", "alice+ci", "alice/*", "pull,push")  # the robot's rule
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    htpasswd = tmp_path / "htpasswd"
    bad = ["alice+ci", "team/app", "Team", "*", "x:y"]
    htpasswd.write_text("".join(f"{n}:{hashed}\n" for n in [*bad, "carol"]))
    srv = token_server(
        data,
        TRUSTYARD_AUTH__HTPASSWD=str(htpasswd),
        TRUSTYARD_AUTH__BCRYPT_COST="5",
        TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT="1000",
    ).start()
    try:
        # A file user posing as alice's robot, or as the owner of team's repository `team/app`.
        for name, scope in [
            ("alice+ci", "repository:alice/app:pull,push"),
            ("team/app", "repository:team/app:pull,push"),
            ("Team", "repository:Team:pull"),
            ("*", "repository:anything:pull"),
        ]:
            r = fetch_token(srv, scope, auth=(name, "pw"))
            assert r.status_code == 401, (name, r.text)
            assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
        # "x:y" splits at the first ':' (user "x", password "y:pw"): refused as well.
        assert fetch_token(srv, auth=("x", "y:pw")).status_code == 401
        # A well-named file user logs in and owns carol/*.
        r = fetch_token(srv, "repository:carol/app:pull,push", auth=("carol", "pw"))
        assert r.status_code == 200 and access(r.json()["token"])[0]["actions"] == ["pull", "push"]
        log = srv.log()
        assert log.count("htpasswd_entry_skipped") >= 4
        assert hashed not in log

        # alice's hash (cost 4) is upgraded to the server's cost 5 by her next login.
        assert stored_hash(srv, "alice").startswith("$2b$04$")
        assert fetch_token(srv, auth=("alice", "wrong")).status_code == 401
        assert stored_hash(srv, "alice").startswith("$2b$04$")  # not by a wrong password
        assert fetch_token(srv, auth=("alice", "alice-pw")).status_code == 200
        upgraded = stored_hash(srv, "alice")
        assert upgraded.startswith("$2b$05$") and bcrypt.checkpw(b"alice-pw", upgraded.encode())
        assert fetch_token(srv, auth=("alice", "alice-pw")).status_code == 200
        assert stored_hash(srv, "alice") == upgraded
        assert "password_rehashed" in srv.log() and "alice-pw" not in srv.log()
        r = httpx.get(f"{srv.url}/v2/")
        assert r.status_code == 401
    finally:
        srv.stop()
