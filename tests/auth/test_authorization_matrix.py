"""Every route x every kind of caller, against a running server in token mode: exact statuses.

The rights each route needs are declared once on the route (`auth.scopes.GuardedRoute`); this
table says them again, independently, as the expected answer for seven callers: anonymous, a
user with pull, with pull+push, with pull+push+delete, an admin, a robot (pull+push), and an
expired robot. Authorized calls get the handler's own answer (200/201/202, or the 404/400 of a
missing object or a bad body), the rest 401 (no valid token) or 403 (the token lacks a right).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest

from tests.auth.integration import add_user, bearer, cli, fetch_token, token_server
from tests.integration.images import OCI_MANIFEST, Image, make_image, push_image, sha256
from tests.integration.server import ServerProcess

REPO = "team/app"
ADMIN = ("root", "root-pw")
PASSWORDS = {"puller": "pull-pw", "pusher": "push-pw", "deleter": "delete-pw"}
UNKNOWN_DIGEST = "sha256:" + "0" * 64
UNKNOWN_UPLOAD = "0" * 32
ALL_SCOPES = (f"repository:{REPO}:pull,push,delete,*", "registry:catalog:*")


@dataclass
class Caller:
    name: str
    token: str | None  # None: no token could be had (the request goes with Basic credentials)
    basic: tuple[str, str] | None
    actions: frozenset[str]  # what the issued token grants on REPO
    catalog: bool


@dataclass
class World:
    server: ServerProcess
    image: Image
    callers: dict[str, Caller]


def _robot(data: Path, owner: str, name: str, *extra: str) -> tuple[str, str]:
    out = cli(data, "robot", "add", owner, name, *extra)
    account, secret = next(line for line in out.splitlines() if "\t" in line).split("\t")
    return account, secret


def _caller(server: ServerProcess, name: str, creds: tuple[str, str] | None) -> Caller:
    r = fetch_token(server, *ALL_SCOPES, auth=creds)
    if r.status_code != 200:
        return Caller(name, None, creds, frozenset(), False)
    tok = r.json()["token"]
    claims = jwt.decode(tok, options={"verify_signature": False})
    access = {(a["type"], a["name"]): frozenset(a["actions"]) for a in claims["access"]}
    return Caller(
        name,
        tok,
        creds,
        access.get(("repository", REPO), frozenset()),
        "*" in access.get(("registry", "catalog"), frozenset()),
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("matrix") / "data"
    add_user(data, *ADMIN, admin=True)
    for user, password in PASSWORDS.items():
        add_user(data, user, password)
    cli(data, "acl", "add", "puller", "team/*", "pull")
    cli(data, "acl", "add", "pusher", "team/*", "pull,push")
    cli(data, "acl", "add", "deleter", "team/*", "pull,push,delete")
    robot = _robot(data, "pusher", "ci")
    cli(data, "acl", "add", robot[0], "team/*", "pull,push")
    expired = _robot(data, "pusher", "old", "--expires-days", "0.00001")  # under a second
    cli(data, "acl", "add", expired[0], "team/*", "pull,push")
    server = token_server(data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS_PER_CLIENT="1000").start()
    try:
        time.sleep(1.0)  # the expired robot's second is over
        admin_token = _caller(server, "admin", ADMIN).token
        assert admin_token is not None
        image = make_image(seed="matrix")
        with httpx.Client(base_url=server.url, headers=bearer(admin_token), timeout=30) as c:
            push_image(c, REPO, image, "v1")
        creds: dict[str, tuple[str, str] | None] = {
            "anonymous": None,
            "puller": ("puller", PASSWORDS["puller"]),
            "pusher": ("pusher", PASSWORDS["pusher"]),
            "deleter": ("deleter", PASSWORDS["deleter"]),
            "admin": ADMIN,
            "robot": robot,
            "expired robot": expired,
        }
        callers = {name: _caller(server, name, c) for name, c in creds.items()}
        yield World(server, image, callers)
    finally:
        server.stop()


# The grants each caller's token must carry on REPO (the ACLs above); admin: see the test.
EXPECTED_GRANTS = {
    "anonymous": set(),
    "puller": {"pull"},
    "pusher": {"pull", "push"},
    "deleter": {"pull", "push", "delete"},
    "admin": {"pull", "push", "delete"},
    "robot": {"pull", "push"},
    "expired robot": None,  # no token at all
}


def test_each_caller_holds_the_expected_token(world: World) -> None:
    for name, expected in EXPECTED_GRANTS.items():
        caller = world.callers[name]
        if expected is None:
            assert caller.token is None, name
            continue
        assert caller.token is not None, name
        # admins hold `*` (hole 12: deleting trust data, rotating server keys); `*` covers
        # every action
        assert ("*" in caller.actions) == (name == "admin"), name
        actions = {"pull", "push", "delete"} if "*" in caller.actions else set(caller.actions)
        assert actions == expected, name
        assert caller.catalog == (name == "admin"), name


@dataclass(frozen=True)
class Case:
    """One route: the right it needs and the answer an authorized caller gets."""

    method: str
    path: str
    needs: str  # identity | catalog | pull | push | delete | star
    ok: int
    body: bytes | None = None
    content_type: str | None = None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


M = f"/v2/{REPO}"
T = f"/v2/{REPO}/_trust"
CASES = [
    # registry
    Case("GET", "/v2/", "identity", 200),
    Case("GET", "/v2/_catalog", "catalog", 200),
    Case("GET", f"{M}/tags/list", "pull", 200),
    Case("GET", f"{M}/manifests/v1", "pull", 200),
    Case("HEAD", f"{M}/manifests/v1", "pull", 200),
    Case("PUT", f"{M}/manifests/v1", "push", 201, b"<manifest>", OCI_MANIFEST),
    Case("DELETE", f"{M}/manifests/{UNKNOWN_DIGEST}", "delete", 404),
    Case("POST", f"{M}/blobs/uploads/", "push", 202),
    Case("POST", f"{M}/blobs/uploads", "push", 202),
    Case("GET", f"{M}/blobs/uploads/{UNKNOWN_UPLOAD}", "push", 404),
    Case("PATCH", f"{M}/blobs/uploads/{UNKNOWN_UPLOAD}", "push", 404, b"x"),
    Case("PUT", f"{M}/blobs/uploads/{UNKNOWN_UPLOAD}?digest={UNKNOWN_DIGEST}", "push", 404),
    Case("DELETE", f"{M}/blobs/uploads/{UNKNOWN_UPLOAD}", "push", 404),
    Case("GET", f"{M}/blobs/<config>", "pull", 200),
    Case("HEAD", f"{M}/blobs/<config>", "pull", 200),
    Case("DELETE", f"{M}/blobs/{UNKNOWN_DIGEST}", "delete", 404),
    Case("GET", f"{M}/referrers/<manifest>", "pull", 200),
    # trust (no trust data for REPO yet: metadata reads are 404 to those who may read)
    Case("GET", f"{T}/tuf/root.json", "pull", 404),
    Case("GET", f"{T}/tuf/timestamp.json", "pull", 404),
    Case("POST", f"{T}/tuf/", "push", 400, b"", "multipart/form-data; boundary=x"),
    Case("GET", f"{T}/tuf/timestamp.key", "push", 200),
    Case("GET", f"{T}/tuf/snapshot.key", "push", 200),
    Case("POST", f"{T}/tuf/timestamp.key", "star", 200),
    Case("POST", f"{T}/tuf/snapshot.key", "star", 200),
    Case("DELETE", f"{T}/tuf/", "star", 200),
    Case("GET", "/v2/_trust/changefeed", "catalog", 200),
    Case("GET", f"/v2/_trust/changefeed?filter={REPO}", "catalog", 200),
    Case("GET", f"{T}/changefeed", "pull", 200),
    # the signatures extension
    Case("GET", f"/extensions/v2/{REPO}/signatures/<manifest>", "pull", 200),
    Case("PUT", f"/extensions/v2/{REPO}/signatures/<manifest>", "push", 400, b"{}"),
    Case("DELETE", f"/extensions/v2/{REPO}/signatures/<manifest>", "delete", 202),
    # the namespace authority's statements: anyone may read, only the admin right posts
    Case("GET", "/extensions/v2/_authority/statements", "identity", 200),
    Case("GET", "/extensions/v2/_authority/statements/nope", "identity", 404),
    Case("POST", "/extensions/v2/_authority/statements", "catalog", 400, b"garbage"),
]


def expected_status(case: Case, caller: Caller) -> int:
    if caller.token is None:
        return 401
    if case.needs == "identity":
        return case.ok
    if case.needs == "catalog":
        return case.ok if caller.catalog else 403
    wanted = {
        "pull": {"pull"},
        "push": {"pull", "push"},
        "delete": {"delete"},
        "star": {"*"},
    }[case.needs]
    granted = caller.actions
    return case.ok if "*" in granted or wanted <= granted else 403


def _resolve(text: str, image: Image) -> str:
    return text.replace("<config>", sha256(image.config)).replace("<manifest>", image.digest)


@pytest.mark.parametrize("who", list(EXPECTED_GRANTS))
@pytest.mark.parametrize("case", CASES, ids=str)
def test_route_answers_each_caller_exactly(world: World, case: Case, who: str) -> None:
    caller = world.callers[who]
    headers: dict[str, str] = {}
    if caller.token is not None:
        headers.update(bearer(caller.token))
    if case.content_type:
        headers["Content-Type"] = case.content_type
    body = world.image.manifest if case.body == b"<manifest>" else case.body
    auth = caller.basic if caller.token is None else None
    r = httpx.request(
        case.method,
        world.server.url + _resolve(case.path, world.image),
        content=body,
        headers=headers,
        auth=auth,
        timeout=30,
    )
    assert r.status_code == expected_status(case, caller), (r.status_code, r.text[:300])
    if r.status_code in (401, 403) and case.method != "HEAD":
        assert r.json()["errors"][0]["code"] == (
            "UNAUTHORIZED" if r.status_code == 401 else "DENIED"
        )
    if r.status_code in (401, 403):
        assert r.headers["www-authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("who", list(EXPECTED_GRANTS))
def test_token_routes_answer_each_caller(world: World, who: str) -> None:
    caller = world.callers[who]
    ok = 401 if who == "expired robot" else 200
    r = fetch_token(world.server, f"repository:{REPO}:pull", auth=caller.basic)
    assert r.status_code == ok, r.text
    if caller.basic is not None:  # the OAuth2 password grant (anonymous has no password)
        form = {
            "grant_type": "password",
            "service": "trustyard",
            "client_id": "matrix",
            "username": caller.basic[0],
            "password": caller.basic[1],
            "scope": f"repository:{REPO}:pull",
        }
        r = httpx.post(f"{world.server.url}/auth/token", data=form, timeout=30)
        assert r.status_code == ok, r.text
    assert httpx.get(f"{world.server.url}/auth/jwks.json", timeout=30).status_code == 200
