"""Token mode end to end over HTTP: challenge, issuer (GET/POST, refresh), ACLs, attacks."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.auth.integration import (
    add_user,
    bearer,
    challenge,
    cli,
    fetch_token,
    token,
    token_server,
)
from tests.integration.images import make_image, push_blob, push_image, sha256
from tests.integration.server import ServerProcess
from tests.services.redis import RedisServer

ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")
ROOT = ("root", "root-pw")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("auth") / "data"
    add_user(data, *ALICE)
    add_user(data, *BOB)
    add_user(data, *ROOT, admin=True)
    cli(data, "acl", "add", "anonymous", "public/*", "pull")
    # Added before the start: the server rereads rules only every 5 s (AccessPolicy's ttl, which
    # tests/auth/test_access.py drives with a fake clock), so no test here sleeps for a reload.
    cli(data, "acl", "add", "alice+ci", "alice/ci-*", "pull,push")
    server = token_server(
        data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT="1000", TRUSTYARD_LOG_LEVEL="debug"
    ).start()
    yield server
    server.stop()


def client(server: ServerProcess, tok: str | None = None) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers=bearer(tok) if tok else {})


def test_challenge_names_realm_service_and_scope(srv: ServerProcess) -> None:
    r = httpx.get(f"{srv.url}/v2/")
    assert r.status_code == 401
    assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    ch = challenge(r)
    assert ch == {"scheme": "Bearer", "realm": f"{srv.url}/auth/token", "service": "trustyard"}
    r = httpx.head(f"{srv.url}/v2/alice/app/manifests/latest")
    assert r.status_code == 401
    assert challenge(r)["scope"] == "repository:alice/app:pull"
    r = httpx.put(f"{srv.url}/v2/alice/app/manifests/latest", content=b"{}")
    assert challenge(r)["scope"] == "repository:alice/app:pull,push"
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert challenge(httpx.get(f"{srv.url}/v2/_catalog"))["scope"] == "registry:catalog:*"
    r = httpx.delete(f"{srv.url}/v2/alice/app/manifests/{'sha256:' + '0' * 64}")
    assert challenge(r)["scope"] == "repository:alice/app:delete"


def test_get_token_many_scopes_grants_the_allowed_part(srv: ServerProcess) -> None:
    r = fetch_token(
        srv,
        "repository:alice/app:pull,push",
        "repository:bob/app:pull,push",
        "repository:public/base:pull,push",
        "registry:catalog:*",
        auth=ALICE,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    assert "refresh_token" not in body
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert (
        claims["sub"] == "alice" and claims["aud"] == "trustyard" and claims["iss"] == "trustyard"
    )
    assert claims["access"] == [
        {"type": "repository", "name": "alice/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "public/base", "actions": ["pull"]},
    ]
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256" and len(header["kid"]) == 59 and header["x5c"]


def test_push_own_namespace_then_denied_elsewhere(srv: ServerProcess) -> None:
    image = make_image(2, seed="own")
    tok = token(srv, "repository:alice/own:pull,push", auth=ALICE)
    with client(srv, tok) as c:
        push_image(c, "alice/own", image, "v1")
        r = c.get("/v2/alice/own/manifests/v1", headers={"Accept": image_media()})
        assert r.status_code == 200 and r.content == image.manifest
        # Escalation: asks push on bob's repo, gets a token without it; the registry refuses.
        tok2 = token(srv, "repository:bob/app:pull,push", auth=ALICE)
        r = c.post("/v2/bob/app/blobs/uploads/", headers=bearer(tok2))
        assert r.status_code == 403
        assert r.json()["errors"][0]["code"] == "DENIED"
        ch = challenge(r)
        assert ch["error"] == "insufficient_scope"
        assert ch["scope"] == "repository:bob/app:pull,push"
        message = r.json()["errors"][0]["message"]
        assert "alice" in message and "pull,push on repository bob/app" in message


def image_media() -> str:
    return "application/vnd.oci.image.manifest.v1+json"


def test_anonymous_pull_per_pattern(srv: ServerProcess) -> None:
    image = make_image(1, seed="public")
    with client(srv, token(srv, "repository:public/base:push,pull", auth=ROOT)) as c:
        push_image(c, "public/base", image, "latest")
    r = fetch_token(srv, "repository:public/base:pull,push", "repository:alice/own:pull")
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert claims["sub"] == ""
    assert claims["access"] == [{"type": "repository", "name": "public/base", "actions": ["pull"]}]
    with client(srv, r.json()["token"]) as anon:
        got = anon.get("/v2/public/base/manifests/latest", headers={"Accept": image_media()})
        assert got.status_code == 200 and got.content == image.manifest
        blob = anon.get(f"/v2/public/base/blobs/{sha256(image.layers[0])}")
        assert blob.status_code == 200 and blob.content == image.layers[0]
        assert anon.post("/v2/public/base/blobs/uploads/").status_code == 403
        assert anon.get("/v2/alice/own/tags/list").status_code == 403


def test_catalog_needs_admin(srv: ServerProcess) -> None:
    with client(srv, token(srv, "registry:catalog:*", auth=ROOT)) as c:
        r = c.get("/v2/_catalog")
        assert r.status_code == 200 and "repositories" in r.json()
    with client(srv, token(srv, "registry:catalog:*", auth=ALICE)) as c:
        r = c.get("/v2/_catalog")
        assert r.status_code == 403 and challenge(r)["error"] == "insufficient_scope"


def test_mount_needs_pull_on_the_source(srv: ServerProcess) -> None:
    secret = b"bob's secret layer " + str(time.time()).encode()
    with client(srv, token(srv, "repository:bob/secret:pull,push", auth=BOB)) as c:
        digest = push_blob(c, "bob/secret", secret)
    with client(
        srv, token(srv, "repository:alice/m:pull,push", "repository:bob/secret:pull", auth=ALICE)
    ) as c:
        r = c.post("/v2/alice/m/blobs/uploads/", params={"mount": digest, "from": "bob/secret"})
        assert r.status_code == 202, "no pull on the source: a plain upload, never the blob"
        r = c.post("/v2/alice/m/blobs/uploads/", params={"mount": digest})
        assert r.status_code == 202, "mount without from must not find blobs in other repos"
        assert c.head(f"/v2/alice/m/blobs/{digest}").status_code == 404
        own = push_blob(c, "alice/m", b"alice layer " + secret)
    with client(
        srv, token(srv, "repository:alice/n:pull,push", "repository:alice/m:pull", auth=ALICE)
    ) as c:
        r = c.post("/v2/alice/n/blobs/uploads/", params={"mount": own, "from": "alice/m"})
        assert r.status_code == 201


def test_offline_token_refresh_and_oauth_post(srv: ServerProcess) -> None:
    r = fetch_token(
        srv, "repository:alice/app:pull", auth=ALICE, offline_token="true", client_id="t"
    )
    refresh = r.json()["refresh_token"]
    post = httpx.post(
        f"{srv.url}/auth/token",
        data={
            "grant_type": "refresh_token",
            "service": "trustyard",
            "client_id": "t",
            "refresh_token": refresh,
            "scope": "repository:alice/app:pull,push repository:bob/x:push",
        },
    )
    assert post.status_code == 200, post.text
    body = post.json()
    assert body["scope"] == "repository:alice/app:pull,push"
    assert body["expires_in"] == 300 and body["access_token"]
    pw = httpx.post(
        f"{srv.url}/auth/token",
        data={
            "grant_type": "password",
            "service": "trustyard",
            "client_id": "t",
            "username": "alice",
            "password": "alice-pw",
            "access_type": "offline",
            "scope": "repository:alice/app:pull",
        },
    )
    assert pw.status_code == 200 and pw.json()["refresh_token"]
    bad = httpx.post(
        f"{srv.url}/auth/token",
        data={
            "grant_type": "password",
            "service": "trustyard",
            "username": "alice",
            "password": "x",
        },
    )
    assert bad.status_code == 401
    odd = httpx.post(f"{srv.url}/auth/token", data={"grant_type": "authorization_code"})
    assert odd.status_code == 405 and "not supported" in odd.json()["errors"][0]["message"]
    # A refresh token is not an access token.
    assert httpx.get(f"{srv.url}/v2/", headers=bearer(refresh)).status_code == 401
    # Wrong service: refused with a message that says what to set.
    other = fetch_token(srv, auth=ALICE, service="elsewhere")
    assert other.status_code == 403 and "auth.token.service" in other.text


def test_password_change_revokes_refresh_tokens(srv: ServerProcess) -> None:
    add_user(srv.data_dir, "dave", "dave-1")
    refresh = fetch_token(srv, auth=("dave", "dave-1"), offline_token="true").json()[
        "refresh_token"
    ]
    cli(srv.data_dir, "user", "passwd", "dave", "--password-stdin", stdin="dave-2\n")
    r = httpx.post(
        f"{srv.url}/auth/token",
        data={"grant_type": "refresh_token", "service": "trustyard", "refresh_token": refresh},
    )
    assert r.status_code == 401 and "password change" in r.text
    assert fetch_token(srv, auth=("dave", "dave-2")).status_code == 200


def test_robots_with_acl_expiry_and_disable(srv: ServerProcess) -> None:
    out = cli(srv.data_dir, "robot", "add", "alice", "ci")
    name, secret = next(line for line in out.splitlines() if "\t" in line).split("\t")
    assert name == "alice+ci"
    claims = jwt.decode(
        token(
            srv, "repository:alice/ci-app:push", "repository:alice/other:pull", auth=(name, secret)
        ),
        options={"verify_signature": False},
    )
    assert claims["sub"] == "alice+ci"
    assert claims["access"] == [{"type": "repository", "name": "alice/ci-app", "actions": ["push"]}]
    cli(srv.data_dir, "user", "disable", "alice+ci")
    r = fetch_token(srv, auth=(name, secret))
    assert r.status_code == 401
    out = cli(srv.data_dir, "robot", "add", "alice", "short", "--expires-days", "0.00002")
    short_name, short_secret = next(line for line in out.splitlines() if "\t" in line).split("\t")
    time.sleep(2)
    assert fetch_token(srv, auth=(short_name, short_secret)).status_code == 401
    listing = cli(srv.data_dir, "user", "list")
    assert "alice+ci\trobot disabled" in listing and "root\tuser admin" in listing


def test_refused_tokens_say_why(srv: ServerProcess) -> None:
    tok = token(srv, "repository:alice/app:pull", auth=ALICE)
    head, payload, sig = tok.split(".")
    claims = jwt.decode(tok, options={"verify_signature": False})
    claims["access"][0]["actions"] = ["pull", "push", "delete"]
    forged_payload = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    r = httpx.get(
        f"{srv.url}/v2/alice/app/tags/list", headers=bearer(f"{head}.{forged_payload}.{sig}")
    )
    assert r.status_code == 401
    assert challenge(r)["error"] == "invalid_token"
    assert "signature does not verify" in r.json()["errors"][0]["message"]
    assert "signature does not verify" in srv.log()
    none_header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    none = f"{none_header}.{payload}."
    r = httpx.get(f"{srv.url}/v2/", headers=bearer(none))
    assert r.status_code == 401 and "'none' is not accepted" in r.text
    r = httpx.get(f"{srv.url}/v2/", auth=ALICE)
    assert r.status_code == 401 and "not Basic credentials" in r.text


def test_oversized_authorization_header(srv: ServerProcess) -> None:
    r = httpx.get(f"{srv.url}/v2/", headers=bearer("x" * 9000))
    assert r.status_code in (401, 431)
    if r.status_code == 401:
        assert "larger than the limit" in r.text
    r = httpx.get(f"{srv.url}/auth/token", headers={"Authorization": "Basic " + "A" * 9000})
    assert r.status_code in (401, 431)


def test_jwks_lists_the_signing_key_under_both_kids(srv: ServerProcess) -> None:
    doc = httpx.get(f"{srv.url}/auth/jwks.json").json()
    tok = token(srv, auth=ALICE)
    kid = jwt.get_unverified_header(tok)["kid"]
    keys = {k["kid"]: k for k in doc["keys"]}
    assert kid in keys and len(keys) == 2 and all("d" not in k for k in keys.values())
    key = jwt.PyJWK(keys[kid]).key
    assert jwt.decode(tok, key, algorithms=["ES256"], audience="trustyard")["sub"] == "alice"


def test_secrets_never_logged(srv: ServerProcess) -> None:
    r = fetch_token(srv, auth=("alice", "wrong-password-xyz"))
    assert r.status_code == 401
    tok = token(srv, auth=ALICE)
    httpx.get(f"{srv.url}/v2/", headers=bearer(tok))
    log = srv.log_path.read_text() if srv.log_path else ""
    assert "login_failed" in log and "wrong password for 'alice'" in log
    for secret in ["wrong-password-xyz", "alice-pw", "bob-pw", "root-pw", tok, tok.split(".")[2]]:
        assert secret not in log


def test_failed_logins_are_rate_limited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_user(data, "erin", "erin-pw")
    server = token_server(
        data,
        TRUSTYARD_AUTH__MAX_FAILED_LOGINS="3",
        TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT="6",
    ).start()
    try:
        for _ in range(3):
            assert fetch_token(server, auth=("erin", "nope")).status_code == 401
        r = fetch_token(server, auth=("erin", "erin-pw"))
        assert r.status_code == 429
        assert 1 <= int(r.headers["retry-after"]) <= 300
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        # Per client address: spraying other names from one address is limited too.
        for i in range(3):
            assert fetch_token(server, auth=(f"nobody{i}", "x")).status_code == 401
        assert fetch_token(server, auth=("frank", "x")).status_code == 429
        assert "login_rate_limited" in server.log()
    finally:
        server.stop()


def test_failed_logins_are_shared_between_servers_through_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two replicas with TRUSTYARD_REDIS_URL count failures together: the limit is global."""
    data = tmp_path / "data"
    add_user(data, "gina", "gina-pw")
    env = {
        "TRUSTYARD_REDIS_URL": redis_server.url,
        "TRUSTYARD_AUTH__MAX_FAILED_LOGINS": "3",
        "TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT": "100",
    }
    one = token_server(data, **env).start()
    two = token_server(data, **env)
    try:
        two.start()
        assert fetch_token(one, auth=("gina", "nope")).status_code == 401
        assert fetch_token(two, auth=("gina", "nope")).status_code == 401
        assert fetch_token(one, auth=("gina", "gina-pw")).status_code == 200  # resets gina
        for server in (one, two, one):
            assert fetch_token(server, auth=("gina", "nope")).status_code == 401
        # The third failure (counted on two servers) blocks gina on both, right password or not.
        for server in (two, one):
            r = fetch_token(server, auth=("gina", "gina-pw"))
            assert r.status_code == 429, r.text
            assert 1 <= int(r.headers["retry-after"]) <= 300
        assert "login_rate_limited" in two.log() and "login_rate_limited" in one.log()
    finally:
        two.stop()
        one.stop()
