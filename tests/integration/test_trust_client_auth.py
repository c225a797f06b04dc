"""`trustyard trust` against a `trustyard serve` with token auth: the client follows the
WWW-Authenticate Bearer challenge with credentials from a Docker config.json `auths` entry or
from NOTARY_AUTH, for the registry read and the trust server alike."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.integration import add_user, bearer, cli, token, token_server
from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess
from tests.integration.trusttools import trust

# The token server grants scopes only on OCI repository names, which have no ":": a GUN with
# the registry's port (127.0.0.1:PORT/…) cannot be granted, so these GUNs name a host without
# one (`--gun`), as a registry on port 443 would.
GUN = "trust.example/auth/app"

pytestmark = [pytest.mark.slow]

REL = ("rel", "rel-pw")
BOB = ("bob", "bob-pw")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("trustauth") / "data"
    add_user(data, *REL, admin=True)
    add_user(data, *BOB)
    server = token_server(data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT="1000")
    # bob may pull the images and read their trust data (the GUN names the host).
    cli(data, "acl", "add", "bob", "auth/*", "pull")
    cli(data, "acl", "add", "bob", "trust.example/auth/*", "pull")
    server.start()
    yield server
    server.stop()


def notary_auth(user: tuple[str, str]) -> dict[str, str]:
    return {"NOTARY_AUTH": base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


def docker_config(tmp_path: Path, srv: ServerProcess, user: tuple[str, str]) -> dict[str, str]:
    """A DOCKER_CONFIG directory whose config.json logs `user` in to the server."""
    d = tmp_path / f"docker-{user[0]}"
    d.mkdir()
    auth = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    (d / "config.json").write_text(json.dumps({"auths": {srv.host: {"auth": auth}}}))
    return {"DOCKER_CONFIG": str(d), "NOTARY_AUTH": ""}


def push(srv: ServerProcess, repo: str, tag: str, seed: str) -> str:
    tok = token(srv, f"repository:{repo}:pull,push", auth=REL)
    with httpx.Client(base_url=srv.url, timeout=30, headers=bearer(tok)) as c:
        return push_image(c, repo, make_image(seed=seed), tag)


def test_sign_and_verify_through_token_auth(srv: ServerProcess, tmp_path: Path) -> None:
    repo, owner, gun = "auth/app", tmp_path / "owner", GUN
    ref, g = f"{srv.host}/{repo}:v1", ("--gun", GUN)
    digest = push(srv, repo, "v1", "auth-one")
    # The trust API itself is protected.
    assert httpx.get(f"{srv.url}/v2/{gun}/_trust/tuf/root.json").status_code == 401

    # No credentials: a clear refusal that says how to log in; nothing is published.
    out = trust(srv, owner, "init", gun, ok=False, env={"NOTARY_AUTH": "", "DOCKER_CONFIG": "/x"})
    assert "no credentials" in out and "NOTARY_AUTH" in out
    # Credentials from a Docker config.json auths entry.
    dock = docker_config(tmp_path, srv, REL)
    trust(srv, owner, "init", gun, env=dock)
    trust(srv, owner, "sign", ref, *g, env=dock)
    # The same with NOTARY_AUTH for the trust server (the registry read still uses the Docker
    # config), from a fresh trust dir.
    reader = {**dock, **notary_auth(REL)}
    out = trust(srv, tmp_path / "reader", "verify", ref, *g, env=reader)
    assert digest in out and "targets" in out

    # bob may pull auth/* but not push: he reads, his publish is refused with 403.
    bob = docker_config(tmp_path, srv, BOB)
    assert digest in trust(srv, tmp_path / "bob", "verify", ref, *g, env=bob)
    root_before = httpx.get(
        f"{srv.url}/v2/{gun}/_trust/tuf/root.json",
        headers=bearer(token(srv, f"repository:{gun}:pull", auth=REL)),
    ).content
    out = trust(srv, owner, "unsign", ref, *g, ok=False, env=notary_auth(BOB))
    assert "403" in out and "DENIED" in out
    # A wrong password is named as such by the token server.
    out = trust(
        srv,
        tmp_path / "x",
        "verify",
        ref,
        *g,
        ok=False,
        env={**dock, **notary_auth(("rel", "nope"))},
    )
    assert "refused user rel" in out and "nope" not in out
    # Nothing changed: rel still verifies v1.
    assert digest in trust(srv, tmp_path / "reader", "verify", ref, *g, env=reader)
    root_after = httpx.get(
        f"{srv.url}/v2/{gun}/_trust/tuf/root.json",
        headers=bearer(token(srv, f"repository:{gun}:pull", auth=REL)),
    ).content
    assert root_after == root_before


def test_malformed_notary_auth(srv: ServerProcess, tmp_path: Path) -> None:
    out = trust(srv, tmp_path / "t", "init", GUN, ok=False, env={"NOTARY_AUTH": "not base64!"})
    assert "NOTARY_AUTH is not base64 of user:password" in out
