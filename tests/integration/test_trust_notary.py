"""The real Debian `notary` 0.7.0 client against trustyard's trust server (plain HTTP: the
client accepts an http:// server URL as is)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import require
from tests.integration.server import ServerProcess
from trustyard.crypto.notary_keys import PrivateKey

pytestmark = [pytest.mark.needs_notary, pytest.mark.needs_openssl, pytest.mark.slow]

PASSPHRASES = {
    "NOTARY_ROOT_PASSPHRASE": "root-pass-1",
    "NOTARY_TARGETS_PASSPHRASE": "targets-pass-1",
    "NOTARY_SNAPSHOT_PASSPHRASE": "snapshot-pass-1",
    "NOTARY_DELEGATION_PASSPHRASE": "delegation-pass-1",
}


class Notary:
    def __init__(self, server: ServerProcess, trust_dir: Path) -> None:
        self.binary = require("notary")
        self.server = server
        self.trust_dir = trust_dir
        self.env = {**os.environ, **PASSPHRASES}

    def run(self, *args: str, check: bool = True, stdin: bytes | None = None) -> str:
        proc = subprocess.run(
            [self.binary, "-s", self.server.url, "-d", str(self.trust_dir), *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=120,
        )
        out = proc.stdout.decode() + proc.stderr.decode()
        if check and proc.returncode != 0:
            raise AssertionError(f"notary {' '.join(args)} failed:\n{out}\n{self.server.log()}")
        if not check and proc.returncode == 0:
            raise AssertionError(f"notary {' '.join(args)} unexpectedly succeeded:\n{out}")
        return out


@pytest.fixture(scope="module")
def trust_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("trust") / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def notary(trust_server: ServerProcess, tmp_path: Path) -> Notary:
    return Notary(trust_server, tmp_path / "owner")


def make_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def delegate_cert(tmp_path: Path) -> tuple[Path, Path]:
    require("openssl")
    key, cert = tmp_path / "delegate.key", tmp_path / "delegate.crt"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-x509",
            "-key",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            "/CN=releases",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def test_init_add_addhash_list_lookup_verify_and_tofu(notary: Notary, tmp_path: Path) -> None:
    gun = "127.0.0.1/team/app"
    notary.run("init", gun, "-p")
    artifact = make_file(tmp_path, "artifact.bin", b"release one\n")
    notary.run("add", gun, "v1", str(artifact))
    digest = "a" * 64
    notary.run("addhash", gun, "v2", "1234", "--sha256", digest)
    notary.run("publish", gun)
    listing = notary.run("list", gun)
    assert "v1" in listing and "v2" in listing and digest in listing
    assert "1234" in notary.run("lookup", gun, "v2")
    # verify reads the payload from stdin and prints it back when the trust data matches
    assert notary.run("verify", gun, "v1", stdin=artifact.read_bytes()) == "release one\n"
    notary.run("verify", gun, "v1", stdin=b"tampered\n", check=False)
    # A client with an empty trust dir trusts on first use and sees the same targets.
    fresh = Notary(notary.server, tmp_path / "fresh")
    assert "v1" in fresh.run("list", gun) and "v2" in fresh.run("list", gun)


def test_server_managed_snapshot_and_delegate_publish(notary: Notary, tmp_path: Path) -> None:
    gun = "127.0.0.1/team/delegated"
    notary.run("init", gun, "-p")
    notary.run("key", "rotate", gun, "snapshot", "--server-managed")
    key, cert = delegate_cert(tmp_path)
    notary.run("delegation", "add", gun, "targets/releases", str(cert), "--all-paths", "-p")
    assert "targets/releases" in notary.run("delegation", "list", gun)
    # The delegate holds only its own key: the server must build the snapshot.
    delegate = Notary(notary.server, tmp_path / "delegate")
    delegate.run("key", "import", str(key), "--role", "targets/releases")
    payload = make_file(tmp_path, "rel.bin", b"delegated release\n")
    delegate.run("add", gun, "v1", str(payload), "--roles", "targets/releases", "-p")
    listing = notary.run("list", gun, "--roles", "targets/releases")
    assert "v1" in listing and "targets/releases" in listing
    fresh = Notary(notary.server, tmp_path / "fresh")
    assert "targets/releases" in fresh.run("list", gun)
    # Remove the target, then the delegation.
    delegate.run("remove", gun, "v1", "--roles", "targets/releases", "-p")
    assert "v1" not in notary.run("list", gun)
    notary.run("delegation", "remove", gun, "targets/releases", "-y", "-p")
    assert "targets/releases" not in notary.run("delegation", "list", gun)


def test_key_rotations(notary: Notary, tmp_path: Path) -> None:
    gun = "127.0.0.1/team/rotating"
    notary.run("init", gun, "-p")
    before = httpx.get(f"{notary.server.url}/v2/{gun}/_trust/tuf/timestamp.key").json()
    notary.run("key", "rotate", gun, "timestamp", "--server-managed")
    after = httpx.get(f"{notary.server.url}/v2/{gun}/_trust/tuf/timestamp.key").json()
    assert after != before  # the new root names the rotated key, and the server signs with it
    notary.run("key", "rotate", gun, "targets")
    notary.run("add", gun, "v1", str(make_file(tmp_path, "x", b"x")), "-p")
    fresh = Notary(notary.server, tmp_path / "fresh")
    assert "v1" in fresh.run("list", gun)
    root = httpx.get(f"{notary.server.url}/v2/{gun}/_trust/tuf/root.json")
    assert b'"version":3' in root.content.replace(b" ", b"")  # two rotations: root v3


def test_canonical_json_edge_cases_in_target_names(notary: Notary, tmp_path: Path) -> None:
    # <, > and & are raw in Notary's canonical JSON (Go's encoding/json would escape them):
    # the server verifies the client's signature over them.
    gun = "127.0.0.1/team/names"
    notary.run("init", gun, "-p")
    notary.run("add", gun, "a<b>&c\u00e9", str(make_file(tmp_path, "y", b"y")), "-p")
    assert "a<b>&c\u00e9" in Notary(notary.server, tmp_path / "fresh").run("list", gun)


def test_delete_remote(notary: Notary) -> None:
    gun = "127.0.0.1/team/gone"
    notary.run("init", gun, "-p")
    url = f"{notary.server.url}/v2/{gun}/_trust/tuf/root.json"
    assert httpx.get(url).status_code == 200
    notary.run("delete", gun, "--remote")
    resp = httpx.get(url)
    assert resp.status_code == 404
    assert resp.json()["errors"][0]["code"] == "METADATA_NOT_FOUND"
    feed = httpx.get(f"{notary.server.url}/v2/{gun}/_trust/changefeed").json()
    assert [r["Category"] for r in feed["records"]][-1] == "deletion"


def test_ecdsa_server_keys(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "data",
        extra_env={
            "TRUSTYARD_TRUST__KEY_ALGORITHM": "ecdsa",
            "TRUSTYARD_TRUST__KEY_PASSPHRASE": "server-secret",
        },
    ).start()
    try:
        client = Notary(srv, tmp_path / "owner")
        gun = "127.0.0.1/team/ecdsa"
        key = httpx.get(f"{srv.url}/v2/{gun}/_trust/tuf/timestamp.key").json()
        assert key["keytype"] == "ecdsa"
        client.run("init", gun, "-p")
        client.run("add", gun, "v1", str(make_file(tmp_path, "z", b"z")), "-p")
        assert "v1" in Notary(srv, tmp_path / "fresh").run("list", gun)
        # The private halves are stored encrypted with the configured passphrase.
        with sqlite3.connect(tmp_path / "data" / "metadata.db") as db:
            stored = db.execute("SELECT role, private FROM tuf_server_keys").fetchall()
        assert {role for role, _ in stored} == {"timestamp"}
        for _, pem in stored:
            assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
            assert PrivateKey.decrypt(pem, b"server-secret").algorithm == "ecdsa"
            with pytest.raises(ValueError):
                PrivateKey.decrypt(pem, b"wrong")
    finally:
        srv.stop()
