"""The real Debian `notary` client through token auth: against the real `notary-server` trusting
our issuer (`trustyard serve --only token`), and against our own trust server in token mode.

The client takes credentials from NOTARY_AUTH = base64(user:password) (notary 0.7
cmd/notary/tuf.go, passwordStore.Basic) and sends them only for writes; reads are anonymous, so
the namespace also gets an anonymous pull rule.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.integration import AuthServerProcess, add_user, cli, token_issuer, token_server
from tests.integration.conftest import require
from tests.integration.server import free_port

pytestmark = [pytest.mark.needs_notary, pytest.mark.slow]

ALICE = ("alice", "alice-pw")
BOB = ("bob", "bob-pw")
PASSPHRASES = {
    "NOTARY_ROOT_PASSPHRASE": "root-pass-1",
    "NOTARY_TARGETS_PASSPHRASE": "targets-pass-1",
    "NOTARY_SNAPSHOT_PASSPHRASE": "snapshot-pass-1",
    "NOTARY_DELEGATION_PASSPHRASE": "delegation-pass-1",
}


def notary(
    url: str, trust_dir: Path, *args: str, user: tuple[str, str] | None, ok: bool = True
) -> str:
    env = {k: v for k, v in os.environ.items() if k != "NOTARY_AUTH"}
    env.update(PASSPHRASES, HOME=str(trust_dir.parent))
    if user is not None:
        env["NOTARY_AUTH"] = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    proc = subprocess.run(
        [require("notary"), "-s", url, "-d", str(trust_dir), *args],
        capture_output=True,
        env=env,
        stdin=subprocess.DEVNULL,  # never wait for a typed username
        timeout=120,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert (proc.returncode == 0) == ok, f"notary {' '.join(args)} -> {proc.returncode}:\n{out}"
    return out


def accounts(data: Path) -> None:
    add_user(data, *ALICE)
    add_user(data, *BOB)
    cli(data, "acl", "add", "anonymous", "alice/*", "pull")  # the client reads anonymously


def publish_and_refuse(url: str, tmp_path: Path, refused: str) -> None:
    """alice publishes in her namespace; bob is refused there; anonymous readers see it.

    `refused`: how the client reports bob's refusal. notary-server answers 401 (the client
    says "not authorized"); ours answers 403 insufficient_scope (RFC 6750), which notary 0.7
    prints as "unable to reach trust server at this time: 403".
    """
    artifact = tmp_path / "artifact.bin"
    artifact.write_bytes(b"release one\n")
    owner = tmp_path / "alice-trust"
    notary(url, owner, "init", "alice/app", "-p", user=ALICE)
    notary(url, owner, "add", "alice/app", "v1", str(artifact), user=ALICE)
    assert "Successfully published" in notary(url, owner, "publish", "alice/app", user=ALICE)
    assert "v1" in notary(url, owner, "list", "alice/app", user=None)
    assert "v1" in notary(url, tmp_path / "reader", "list", "alice/app", user=None)
    intruder = tmp_path / "bob-trust"
    out = notary(url, intruder, "init", "alice/other", "-p", user=BOB, ok=False)
    assert refused in out, out
    out = notary(url, intruder, "init", "alice/other", "-p", user=("alice", "wrong"), ok=False)
    assert "invalid username or password" in out, out  # our issuer's answer, relayed
    # Nothing reached the server for alice/other.
    assert "does not have trust data" in notary(
        url, intruder, "list", "alice/other", user=None, ok=False
    )


@pytest.fixture
def issuer(tmp_path: Path) -> Iterator[AuthServerProcess]:
    data = tmp_path / "issuer"
    accounts(data)
    server = token_issuer(data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS="50").start()
    yield server
    server.stop()


def start_notary_server(
    tmp_path: Path, realm: str, bundle: Path
) -> tuple[subprocess.Popen[bytes], str]:
    exe = require("notary-server")
    port = free_port()
    config = tmp_path / "notary-server.json"
    config.write_text(
        json.dumps(
            {
                "server": {"http_addr": f"127.0.0.1:{port}"},
                "trust_service": {"type": "local"},  # no notary-signer: keys in memory
                "storage": {"backend": "memory"},
                "logging": {"level": "debug"},
                "auth": {
                    "type": "token",
                    "options": {
                        "realm": realm,
                        "service": "trustyard",
                        "issuer": "trustyard",
                        "rootcertbundle": str(bundle),
                    },
                },
            }
        )
    )
    log = tmp_path / "notary-server.log"
    proc = subprocess.Popen(
        [exe, "-config", str(config), "-logf", "logfmt"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"notary-server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v2/", timeout=1).status_code == 401:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"notary-server did not start:\n{log.read_text()[-3000:]}")


def test_notary_server_accepts_our_tokens(issuer: AuthServerProcess, tmp_path: Path) -> None:
    """Proof (c): the real notary-server, `auth.type = token` with our realm and cert.pem."""
    bundle = issuer.data_dir / "auth" / "token-signing" / "cert.pem"
    proc, url = start_notary_server(tmp_path, f"{issuer.url}/auth/token", bundle)
    try:
        r = httpx.get(f"{url}/v2/alice/app/_trust/tuf/root.json")
        assert r.status_code == 401
        assert f'realm="{issuer.url}/auth/token"' in r.headers["www-authenticate"]
        publish_and_refuse(url, tmp_path, "you are not authorized")
        assert "login_failed" in issuer.log()  # alice's wrong password reached our issuer
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_our_trust_server_with_token_auth(tmp_path: Path) -> None:
    """The notary client through our token flow against our own trust server."""
    data = tmp_path / "data"
    accounts(data)
    srv = token_server(data, TRUSTYARD_AUTH__MAX_FAILED_LOGINS="50").start()
    try:
        publish_and_refuse(srv.url, tmp_path, "trust server at this time: 403")
        # Each user owns a namespace: bob publishes in his own.
        notary(srv.url, tmp_path / "bob-own", "init", "bob/app", "-p", user=BOB)
        r = httpx.get(f"{srv.url}/v2/bob/app/_trust/tuf/root.json")
        assert r.status_code == 401  # no anonymous rule for bob/*
        assert "insufficient_scope" not in r.headers["www-authenticate"]
        assert "insufficient_scope" in srv.log()
    finally:
        srv.stop()
