"""Trust audit rows name who did it: the token's `sub`, the Basic user, else `anonymous`.

Before, every row said `anonymous`, even for an authenticated publish. The real notary client
publishes through a running server in token mode and in htpasswd mode; the rows are read from
the server's database.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.auth.integration import AuthServerProcess, token_server
from tests.integration.conftest import require
from tests.integration.server import ServerProcess
from tests.integration.test_auth_notary import ALICE, BOB, accounts, notary

pytestmark = [pytest.mark.needs_notary, pytest.mark.slow]


def audit_rows(data: Path, gun: str) -> list[tuple[str, str]]:
    with sqlite3.connect(data / "metadata.db") as db:
        rows = db.execute(
            "SELECT action, actor FROM trust_audit WHERE gun = ? ORDER BY id", (gun,)
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def publish(url: str, trust_dir: Path, gun: str, artifact: Path, user: tuple[str, str]) -> None:
    notary(url, trust_dir, "init", gun, "-p", user=user)
    notary(url, trust_dir, "add", gun, "v1", str(artifact), user=user)
    assert "Successfully published" in notary(url, trust_dir, "publish", gun, user=user)


def test_token_mode_records_the_token_subject(tmp_path: Path) -> None:
    data = tmp_path / "data"
    accounts(data)
    srv = token_server(data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS="50").start()
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"release\n")
    try:
        publish(srv.url, tmp_path / "alice", "alice/app", artifact, ALICE)
        publish(srv.url, tmp_path / "bob", "bob/app", artifact, BOB)
        # bob cannot write alice's collection, so he cannot put his name (or hers) in its log.
        notary(srv.url, tmp_path / "bob", "init", "alice/app", "-p", user=BOB, ok=False)
    finally:
        srv.stop()
    alice_rows = audit_rows(data, "alice/app")
    assert alice_rows and {a for a, _ in alice_rows} == {"publish"}
    assert {actor for _, actor in alice_rows} == {"alice"}, alice_rows
    assert {actor for _, actor in audit_rows(data, "bob/app")} == {"bob"}


def test_htpasswd_mode_records_the_basic_user(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    for user, password in (ALICE, BOB):
        create = ["-c"] if user == ALICE[0] else []
        subprocess.run(
            [require("htpasswd"), "-B", "-b", *create, htpasswd, user, password],
            check=True,
            capture_output=True,
        )
    data = tmp_path / "data"
    srv = AuthServerProcess(
        data,
        extra_env={"TRUSTYARD_AUTH__MODE": "htpasswd", "TRUSTYARD_AUTH__HTPASSWD": str(htpasswd)},
    ).start()
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"release\n")
    try:
        publish(srv.url, tmp_path / "alice", "team/app", artifact, ALICE)
        gun_url = f"{srv.url}/v2/team/app/_trust/tuf"
        r = httpx.post(f"{gun_url}/snapshot.key", auth=BOB, timeout=30)
        assert r.status_code == 200, r.text
        r = httpx.delete(f"{gun_url}/", auth=BOB, timeout=30)
        assert r.status_code == 200, r.text
        # A wrong password never reaches the handler, so it never writes a row.
        r = httpx.delete(f"{gun_url}/", auth=(BOB[0], "wrong"), timeout=30)
        assert r.status_code == 401
    finally:
        srv.stop()
    rows = audit_rows(data, "team/app")
    publishes = [actor for action, actor in rows if action == "publish"]
    assert publishes and set(publishes) == {"alice"}, rows
    assert ("rotate_key", "bob") in rows and rows[-1] == ("delete", "bob"), rows
    assert all(actor != "anonymous" for _, actor in rows), rows


def test_no_auth_records_anonymous(tmp_path: Path) -> None:
    """Without authentication there is no verified subject; a made-up header changes nothing."""
    data = tmp_path / "data"
    srv = ServerProcess(data).start()
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"release\n")
    try:
        publish(srv.url, tmp_path / "owner", "open/app", artifact, ALICE)
        r = httpx.delete(
            f"{srv.url}/v2/open/app/_trust/tuf/",
            headers={"Authorization": "Basic " + "bWFsbG9yeTp4"},  # mallory:x, never checked
            timeout=30,
        )
        assert r.status_code == 200
    finally:
        srv.stop()
    rows = audit_rows(data, "open/app")
    assert rows and {actor for _, actor in rows} == {"anonymous"}, rows
