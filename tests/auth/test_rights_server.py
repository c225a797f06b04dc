"""ACL rights against a running token-auth server: `${user}` reaches only the caller's own
subtree, a user owns the GUNs of their repositories (`HOST:PORT/alice/app`, what Notary clients
and `trustyard trust` use) and no others, and trust data can be deleted by admins and by rules
granting `*`, never by an owner without it."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.integration import add_user, bearer, cli, fetch_token, token, token_server
from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess
from tests.integration.trusttools import trust

pytestmark = [pytest.mark.slow]

ROOT = ("root", "root-pw")
ALICE = ("alice", "alice-pw")
ALICE_X = ("alice-x", "alice-x-pw")
BOB = ("bob", "bob-pw")
CAROL = ("carol", "carol-pw")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("rights") / "data"
    add_user(data, *ROOT, admin=True)
    for user in (ALICE, ALICE_X, BOB, CAROL):
        add_user(data, *user)
    cli(data, "group", "add", "ops", "carol")
    cli(data, "acl", "add", "group:ops", "ops/*", "*")
    cli(data, "acl", "add", "bob", "ops/*", "pull,push")
    cli(data, "acl", "add", "*", "shared/${user}/*", "pull,push")
    # The rule docs/auth.md used to show, stored before `acl add` refused it.
    with sqlite3.connect(data / "metadata.db") as db:
        db.execute(
            "INSERT INTO auth_acl_rules (account, repository, actions) VALUES (?, ?, ?)",
            ("*", "shared/${user}-*", "*"),
        )
    server = token_server(data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT="1000").start()
    yield server
    server.stop()


def access(tok: str) -> list[dict[str, Any]]:
    payload = tok.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return list(claims["access"])


def push(srv: ServerProcess, who: tuple[str, str], repo: str, seed: str) -> httpx.Response:
    tok = token(srv, f"repository:{repo}:pull,push", auth=who)
    with httpx.Client(base_url=srv.url, timeout=30, headers=bearer(tok)) as c:
        push_image(c, repo, make_image(seed=seed), "v1")
        return c.get(f"/v2/{repo}/manifests/v1")


def notary_auth(user: tuple[str, str]) -> dict[str, str]:
    raw = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"NOTARY_AUTH": raw, "DOCKER_CONFIG": "/nonexistent"}


# -- ${user} ------------------------------------------------------------------------------------
def test_glued_user_rule_is_refused_by_the_cli(srv: ServerProcess) -> None:
    out = cli(srv.data_dir, "acl", "add", "*", "shared/${user}-*", "*", check=False)
    assert "whole path component" in out and "'shared/${user}/*'" in out, out
    for bad in ["*/${user}/*", "shared/${user}*", "${user}.dev"]:
        assert "error:" in cli(srv.data_dir, "acl", "add", "*", bad, "pull", check=False), bad
    listed = cli(srv.data_dir, "acl", "list")
    assert "shared/${user}/*" in listed
    assert "--help" not in listed
    help_text = cli(srv.data_dir, "acl", "add", "--help")
    assert "whole path component" in " ".join(help_text.replace("│", " ").split())


def test_user_rule_does_not_reach_another_users_repository(srv: ServerProcess) -> None:
    """alice against alice-x's `shared/alice-x-secret`, the old documented rule's hole."""
    assert push(srv, ROOT, "shared/alice-x-secret", "secret").status_code == 200
    scope = "repository:shared/alice-x-secret:pull,push,delete"
    r = fetch_token(srv, scope, auth=ALICE)
    assert r.status_code == 200 and access(r.json()["token"]) == []
    tok = r.json()["token"]
    with httpx.Client(base_url=srv.url, timeout=30, headers=bearer(tok)) as c:
        for method in ("GET", "DELETE"):
            answer = c.request(method, "/v2/shared/alice-x-secret/manifests/v1")
            assert answer.status_code == 403, answer.text
            assert answer.json()["errors"][0]["code"] == "DENIED"
    # Neighbours: alice-x gets nothing from the ignored rule either, nor does anonymous.
    for who in (ALICE_X, None):
        r = fetch_token(srv, scope, auth=who)
        assert r.status_code == 200 and access(r.json()["token"]) == []
    assert "acl_rule_ignored" in srv.log()


def test_user_component_rule_gives_each_user_their_own_subtree(srv: ServerProcess) -> None:
    assert push(srv, ALICE, "shared/alice/app", "alice-shared").status_code == 200
    assert push(srv, ALICE_X, "shared/alice-x/app", "alice-x-shared").status_code == 200
    for repo in ("shared/alice-x/app", "shared/alice-x", "shared/alicex/app"):
        r = fetch_token(srv, f"repository:{repo}:pull,push", auth=ALICE)
        assert access(r.json()["token"]) == [], repo
    tok = token(srv, "repository:shared/alice-x/app:pull", auth=ALICE)
    r = httpx.get(f"{srv.url}/v2/shared/alice-x/app/manifests/v1", headers=bearer(tok))
    assert r.status_code == 403


# -- GUN ownership ------------------------------------------------------------------------------
def test_owner_initialises_trust_for_her_repositorys_gun(
    srv: ServerProcess, tmp_path: Path
) -> None:
    gun = f"{srv.host}/alice/app"
    out = trust(srv, tmp_path / "alice", "init", gun, env=notary_auth(ALICE))
    assert f"initialized {gun}" in out
    tok = token(srv, f"repository:{gun}:pull", auth=ALICE)
    assert httpx.get(f"{srv.url}/v2/{gun}/_trust/tuf/root.json", headers=bearer(tok)).is_success
    # No further: another user's namespace under the same host, another host, a nested host.
    for other in (
        f"{srv.host}/alice-x/app",
        f"{srv.host}/bob/app",
        "otherhost:1/alice/x",
        f"127.0.0.1:{srv.port + 1}/alice/x",
        f"{srv.host}/otherhost:1/alice/x",
    ):
        out = trust(srv, tmp_path / "alice", "init", other, ok=False, env=notary_auth(ALICE))
        assert "403" in out or "DENIED" in out or "invalid" in out.lower(), (other, out)
        r = fetch_token(srv, f"repository:{other}:pull,push", auth=ALICE)
        assert access(r.json()["token"]) == [], other
    # Anonymous readers get nothing (no anonymous rule for alice/*).
    assert httpx.get(f"{srv.url}/v2/{gun}/_trust/tuf/root.json").status_code == 401


# -- deleting trust data ------------------------------------------------------------------------
def delete_trust(srv: ServerProcess, who: tuple[str, str], gun: str) -> httpx.Response:
    tok = token(srv, f"repository:{gun}:*", auth=who)
    return httpx.delete(f"{srv.url}/v2/{gun}/_trust/tuf/", headers=bearer(tok), timeout=30)


def root_json(srv: ServerProcess, gun: str) -> int:
    tok = token(srv, f"repository:{gun}:pull", auth=ROOT)
    return httpx.get(f"{srv.url}/v2/{gun}/_trust/tuf/root.json", headers=bearer(tok)).status_code


def test_admin_deletes_trust_data_an_owner_cannot(srv: ServerProcess, tmp_path: Path) -> None:
    gun = f"{srv.host}/alice/signed"
    trust(srv, tmp_path / "alice", "init", gun, env=notary_auth(ALICE))
    assert root_json(srv, gun) == 200
    # The owner has pull, push and delete, but not `*`: 403, nothing deleted.
    owner = delete_trust(srv, ALICE, gun)
    assert owner.status_code == 403, owner.text
    assert owner.json()["errors"][0]["code"] == "DENIED"
    assert 'error="insufficient_scope"' in owner.headers["www-authenticate"]
    assert root_json(srv, gun) == 200
    # Neither can another user, nor anonymous.
    assert delete_trust(srv, BOB, gun).status_code == 403
    assert httpx.delete(f"{srv.url}/v2/{gun}/_trust/tuf/").status_code == 401
    # The admin can.
    assert access(token(srv, f"repository:{gun}:*", auth=ROOT)) == [
        {"type": "repository", "name": gun, "actions": ["*"]}
    ]
    r = delete_trust(srv, ROOT, gun)
    assert r.status_code == 200, r.text
    assert root_json(srv, gun) == 404


def test_a_rule_listing_star_grants_trust_deletion(srv: ServerProcess, tmp_path: Path) -> None:
    gun = f"{srv.host}/ops/app"
    trust(srv, tmp_path / "carol", "init", gun, env=notary_auth(CAROL))
    # bob may push ops/* (publish), but his rule does not list `*`.
    assert delete_trust(srv, BOB, gun).status_code == 403
    assert root_json(srv, gun) == 200
    r = delete_trust(srv, CAROL, gun)
    assert r.status_code == 200, r.text
    assert root_json(srv, gun) == 404


@pytest.mark.needs_notary
def test_notary_client_owner_publishes_admin_deletes(srv: ServerProcess, tmp_path: Path) -> None:
    """The Debian notary client with the GUN it would use for this registry (HOST:PORT/…)."""
    from tests.integration.test_auth_notary import notary

    gun = f"{srv.host}/alice/notary"
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"release\n")
    owner = tmp_path / "alice-notary"
    notary(srv.url, owner, "init", gun, "-p", user=ALICE)
    notary(srv.url, owner, "add", gun, "v1", str(artifact), user=ALICE)
    assert "Successfully published" in notary(srv.url, owner, "publish", gun, user=ALICE)
    assert root_json(srv, gun) == 200
    # The owner's remote delete is refused (she lacks `*`); the admin's goes through.
    out = notary(srv.url, owner, "delete", gun, "--remote", user=ALICE, ok=False)
    assert "403" in out or "not authorized" in out, out
    assert root_json(srv, gun) == 200
    notary(srv.url, tmp_path / "root-notary", "delete", gun, "--remote", user=ROOT)
    assert root_json(srv, gun) == 404


def test_configured_gun_prefix_replaces_the_default(tmp_path: Path) -> None:
    """With trust.gun_prefixes set (the name clients use), that prefix counts, not host:port."""
    data = tmp_path / "data"
    add_user(data, *ALICE)
    server = token_server(data, TRUSTYARD_TRUST__GUN_PREFIXES="trust.example, trust.example:5000/")
    server.start()
    try:
        for gun in ("trust.example/alice/app", "trust.example:5000/alice/app"):
            r = fetch_token(server, f"repository:{gun}:pull,push", auth=ALICE)
            assert access(r.json()["token"]) == [
                {"type": "repository", "name": gun, "actions": ["pull", "push"]}
            ], gun
        for gun in (f"{server.host}/alice/app", "trust.example/alice-x/app", "other/alice/app"):
            r = fetch_token(server, f"repository:{gun}:pull,push", auth=ALICE)
            assert access(r.json()["token"]) == [], gun
    finally:
        server.stop()
