"""The namespace authority end to end: `trustyard authority grant|revoke` store statements in a
real server, `fetch` copies them for offline use, `show --json` judges them against the roots a
client chose; the API refuses garbage, pages with `Link` and revalidates with `ETag`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.integration import add_user, token_server
from tests.auth.pki import Cert, make_cert
from tests.integration.server import ServerProcess
from trustyard.authority.statements import KeySigner, issue_grant, parse
from trustyard.signing.authority_client import AuthorityClient

pytestmark = pytest.mark.integration

API = "/extensions/v2/_authority/statements"


def trustyard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")}
    return subprocess.run(
        [sys.executable, "-m", "trustyard", "authority", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


class Authority:
    """A root, an intermediate and the statement-signing leaf, written where the CLI reads."""

    def __init__(self, where: Path) -> None:
        where.mkdir(parents=True)
        self.root = make_cert("Example Root", ca=True)
        self.inter = self.root.issue("Example Intermediate", ca=True)
        self.leaf: Cert = self.inter.issue("Example Namespace Authority")
        self.root_pem = where / "root.pem"
        self.root_pem.write_bytes(self.root.pem)
        self.cert = where / "leaf.pem"
        self.cert.write_bytes(self.leaf.pem)
        self.chain = where / "chain.pem"
        self.chain.write_bytes(self.inter.pem)
        self.key = where / "leaf.key"
        self.key.write_bytes(self.leaf.key_pem())

    def args(self) -> list[str | Path]:
        return [
            "--authority-key",
            self.key,
            "--authority-cert",
            self.cert,
            "--authority-chain",
            self.chain,
        ]

    def grant(self, user_key: ec.EllipticCurvePrivateKey, user: str) -> bytes:
        assert isinstance(self.leaf.key, ec.EllipticCurvePrivateKey)
        return issue_grant(
            KeySigner(self.leaf.key),
            [self.leaf.cert, self.inter.cert],
            _public_pem(user_key),
            user,
            [f"{user}/*"],
        )


def _public_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_grant_fetch_show_revoke(server: ServerProcess, tmp_path: Path) -> None:
    authority = Authority(tmp_path / "authority")
    user_pub = tmp_path / "alice.pub"
    user_pub.write_bytes(_public_pem(ec.generate_private_key(ec.SECP256R1())))
    roots = tmp_path / "roots"
    added = trustyard("roots", "add", authority.root_pem, "--authority-roots", roots)
    assert added.returncode == 0, added.stderr

    granted = trustyard(
        "grant",
        *authority.args(),
        "--key",
        user_pub,
        "--user",
        "alice",
        "--namespace",
        "team/*",
        "--expires",
        "30d",
        "--registry",
        server.url,
    )
    assert granted.returncode == 0, granted.stderr
    grant_id = granted.stdout.strip()
    assert f"stored grant {grant_id} in {server.url}" in granted.stderr

    local = tmp_path / "statements"
    fetched = trustyard("fetch", "--registry", server.url, "--out", local)
    assert fetched.returncode == 0, fetched.stderr
    assert (local / f"{grant_id}.jws").exists()

    # offline from here on: the server is not asked again
    server.stop()
    shown = trustyard("show", local, "--authority-roots", roots, "--json")
    assert shown.returncode == 0, shown.stderr
    graph = json.loads(shown.stdout)
    assert graph["refused"] == []
    (grant,) = graph["grants"]
    assert grant["statement"] == grant_id and grant["user"] == "alice"
    assert grant["namespaces"] == ["team/*"]
    assert grant["authority"] == "CN=Example Namespace Authority"

    # a disabled root: the same statement is refused, by name
    assert trustyard("roots", "disable", "root.pem", "--authority-roots", roots).returncode == 0
    graph = json.loads(trustyard("show", local, "--authority-roots", roots, "--json").stdout)
    assert graph["grants"] == []
    assert graph["refused"][0]["reason"] == "chain ends at root root.pem, which is disabled"
    assert trustyard("roots", "enable", "root.pem", "--authority-roots", roots).returncode == 0

    server.start()
    revoked = trustyard(
        "revoke",
        *authority.args(),
        "--statement",
        grant_id,
        "--reason",
        "alice left the team",
        "--registry",
        server.url,
    )
    assert revoked.returncode == 0, revoked.stderr
    revocation_id = revoked.stdout.strip()
    assert trustyard("fetch", "--registry", server.url, "--out", local).returncode == 0
    shown = trustyard("show", local, "--authority-roots", roots)
    assert shown.returncode == 0, shown.stderr
    assert "0 grant(s)" in shown.stdout
    assert f"{grant_id}: revoked by {revocation_id} on " in shown.stdout
    assert "alice left the team" in shown.stdout

    # the same grant posted again is stored once and does not undo the revocation
    again = httpx.post(server.url + API, content=(local / f"{grant_id}.jws").read_bytes())
    assert again.status_code == 200, again.text
    graph = json.loads(trustyard("show", local, "--authority-roots", roots, "--json").stdout)
    assert graph["grants"] == [] and len(graph["revocations"]) == 1


def test_api_refuses_garbage_clearly(server: ServerProcess, tmp_path: Path) -> None:
    authority = Authority(tmp_path / "authority")
    statement = authority.grant(ec.generate_private_key(ec.SECP256R1()), "bob")
    header, payload, signature = statement.split(b".")
    tampered = b".".join([header, payload[:-4] + b"AAAA", signature])
    for body, message in (
        (b"hello", "statement refused: not a compact JWS"),
        (b"\xff\xfe", "statement refused: not a JWS"),
        (tampered, "statement refused: "),
        (b"a.b.c", "statement refused: "),
    ):
        r = httpx.post(server.url + API, content=body)
        assert r.status_code == 400, r.text
        error = r.json()["errors"][0]
        assert error["code"] == "STATEMENT_INVALID"
        assert error["message"].startswith(message)
    r = httpx.post(server.url + API, content=b"x" * (200 * 1024))
    assert r.status_code == 413
    r = httpx.get(server.url + API + "/nope")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "STATEMENT_UNKNOWN"
    r = httpx.get(server.url + API, params={"n": "2", "last": "nope"})
    assert r.status_code == 400 and "names no stored statement" in r.text
    assert httpx.get(server.url + API).json() == {"statements": []}


def test_pages_etags_and_the_client(server: ServerProcess, tmp_path: Path) -> None:
    authority = Authority(tmp_path / "authority")
    posted = []
    for i in range(7):
        statement = authority.grant(ec.generate_private_key(ec.SECP256R1()), f"user{i}")
        r = httpx.post(server.url + API, content=statement)
        assert r.status_code == 201, r.text
        sid = parse(statement).id
        assert r.headers["location"] == f"{API}/{sid}"
        posted.append(statement)

    seen: list[bytes] = []
    url: str | None = server.url + API + "?n=3"
    pages = 0
    while url:
        r = httpx.get(url)
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-cache"
        seen += [s.encode() for s in r.json()["statements"]]
        pages += 1
        link = r.headers.get("link")
        url = server.url + link.split(";")[0].strip("<>") if link else None
    assert pages == 3
    assert sorted(seen) == sorted(posted)
    assert seen == sorted(seen, key=lambda s: (parse(s).issued, parse(s).id))

    first = httpx.get(server.url + API, params={"n": "3"})
    again = httpx.get(
        server.url + API, params={"n": "3"}, headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304
    one = httpx.get(server.url + API + "/" + parse(posted[0]).id)
    assert one.content == posted[0]
    assert one.headers["content-type"] == "application/jose"
    assert "immutable" in one.headers["cache-control"]

    with AuthorityClient(server.host, plain_http=True) as client:
        assert sorted(client.fetch_statements(page_size=2)) == sorted(posted)


def _authfile(path: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def test_token_auth_admin_posts_anyone_reads(tmp_path: Path) -> None:
    data = tmp_path / "data"
    add_user(data, "root", "root-pw", admin=True)
    add_user(data, "bob", "bob-pw")
    server = token_server(data).start()
    try:
        authority = Authority(tmp_path / "authority")
        user_pub = tmp_path / "bob.pub"
        user_pub.write_bytes(_public_pem(ec.generate_private_key(ec.SECP256R1())))
        grant: list[str | Path] = [
            "grant",
            *authority.args(),
            "--key",
            user_pub,
            "--user",
            "bob",
            "--namespace",
            "bob/*",
            "--registry",
            server.url,
        ]
        bob = _authfile(tmp_path / "bob.json", server.host, "bob", "bob-pw")
        denied = trustyard(*grant, "--authfile", bob)
        assert denied.returncode == 1
        assert "cannot store the statement: denied by" in denied.stderr
        assert "Traceback" not in denied.stderr

        root = _authfile(tmp_path / "root.json", server.host, "root", "root-pw")
        stored = trustyard(*grant, "--authfile", root)
        assert stored.returncode == 0, stored.stderr

        out = tmp_path / "fetched"
        fetched = trustyard("fetch", "--registry", server.url, "--out", out, "--authfile", bob)
        assert fetched.returncode == 0, fetched.stderr
        assert [p.stem for p in out.glob("*.jws")] == [stored.stdout.strip()]
        anonymous = httpx.get(server.url + API)
        assert anonymous.status_code == 401
    finally:
        server.stop()
