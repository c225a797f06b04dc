"""Secrets at rest under umask 022: a 0700 data dir, 0600 files, a warning for an open store.

Before, the data dir was 0755 and `metadata.db` (password hashes, encrypted trust keys) 0644:
every local user could copy them. Each test starts a real `trustyard serve` (or runs the real
CLI) with the umask most systems have.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.auth.integration import FAST_BCRYPT, token_server
from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def log_size(server: ServerProcess) -> int:
    path = server.log_path
    return path.stat().st_size if path is not None and path.exists() else 0


def warnings(server: ServerProcess, since: int = 0) -> list[dict[str, str]]:
    """The permission warnings in the server's log after byte offset `since` (one start)."""
    assert server.log_path is not None
    with server.log_path.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        if line.startswith("{") and '"secrets_readable_by_others"' in line:
            out.append(json.loads(line))
    return out


def _use(server: ServerProcess) -> None:
    """Push an image and create a trust server key: the store is written, WAL files exist."""
    with httpx.Client(base_url=server.url, timeout=30) as c:
        push_image(c, "perm/app", make_image(1, seed="perm"))
        r = c.get("/v2/example.com/perm/app/_trust/tuf/timestamp.key")
        assert r.status_code in (200, 401, 403), r.text


ADD_ALICE = ["user", "add", "alice", "--password-stdin"]


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o000])
def test_new_store_is_private_under_a_loose_umask(tmp_path: Path, mask: int) -> None:
    data = tmp_path / "data"
    with umask(mask):
        server = ServerProcess(data).start()
    try:
        _use(server)
        db = data / "metadata.db"
        assert mode(data) == 0o700
        assert mode(db) == 0o600
        # SQLite creates the WAL and shared-memory files with the database file's mode.
        for extra in ("metadata.db-wal", "metadata.db-shm"):
            assert (data / extra).exists(), sorted(p.name for p in data.iterdir())
            assert mode(data / extra) == 0o600, extra
        assert mode(data / "trust") == 0o700
        assert mode(data / "trust" / "passphrase") == 0o600
        assert warnings(server) == []
    finally:
        server.stop()


def test_token_signing_key_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with umask(0o022):
        proc = subprocess.run(  # the admin CLI creates the store first
            [sys.executable, "-m", "trustyard", "admin", "--data-dir", str(data), *ADD_ALICE],
            input="alice-pw\n",
            capture_output=True,
            text=True,
            env={**os.environ, **FAST_BCRYPT},  # keeps PYTHONPATH: this checkout's code
            timeout=60,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert mode(data) == 0o700 and mode(data / "metadata.db") == 0o600
        server = token_server(data).start()
    try:
        r = httpx.get(
            f"{server.url}/auth/token",
            params={"service": "trustyard", "scope": "repository:alice/x:pull"},
            auth=("alice", "alice-pw"),
            timeout=30,
        )
        assert r.status_code == 200
        key = data / "auth" / "token-signing" / "key.pem"
        assert mode(key) == 0o600
        assert mode(key.parent) == 0o700
        assert mode(data) == 0o700
        # Others cannot reach anything below the data dir, whatever the inner modes.
        assert mode(data) & 0o077 == 0
        assert warnings(server) == []
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("target", "opened", "wanted"),
    [
        (".", 0o755, 0o700),
        ("metadata.db", 0o644, 0o600),
        ("metadata.db", 0o640, 0o600),  # group-readable is still readable by others
        ("trust/passphrase", 0o644, 0o600),
        ("trust", 0o750, 0o700),
    ],
)
def test_open_existing_store_is_warned_about(
    tmp_path: Path, target: str, opened: int, wanted: int
) -> None:
    data = tmp_path / "data"
    with umask(0o022):
        server = ServerProcess(data).start()
    _use(server)
    server.stop()
    path = (data / target).resolve()
    path.chmod(opened)
    since = log_size(server)
    with umask(0o022):
        server.start()  # a warning, not a refusal: the registry still serves
    try:
        found = warnings(server, since)
        assert len(found) == 1, found
        (entry,) = found
        assert entry["path"] == str(path)
        assert entry["mode"] == f"{opened:04o}" and entry["wanted"] == f"{wanted:04o}"
        assert entry["fix"] == f"chmod {wanted:o} {path}"
        assert entry["level"] == "warning" and str(path) in entry["hint"]
        assert mode(path) == opened  # we say what to run; we do not chmod behind the operator
        assert httpx.get(server.url + "/v2/", timeout=10).status_code == 200
    finally:
        server.stop()
    path.chmod(wanted)  # the fix the warning named silences it
    since = log_size(server)
    with umask(0o022):
        server.start()
    try:
        assert warnings(server, since) == []
    finally:
        server.stop()


def test_world_readable_tls_key_is_warned_about(tmp_path: Path) -> None:
    """The HTTPS private key the operator configured is a secret too."""
    key = tmp_path / "tls.key"
    cert = tmp_path / "tls.crt"
    private = ec.generate_private_key(ec.SECP256R1())
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.chmod(0o644)
    with umask(0o022):
        server = ServerProcess(tmp_path / "data", tls=(cert, key)).start()
    try:
        assert httpx.get(server.url + "/v2/", verify=server.verify).status_code == 200
        (entry,) = warnings(server)
        assert entry["path"] == str(key) and entry["fix"] == f"chmod 600 {key}"
    finally:
        server.stop()
