"""Server-managed timestamp/snapshot keys in a PKCS#11 token (SoftHSM2): the real notary client
publishes, rotates and reads with them, the timestamp is re-signed by the token, and only key
references (never private keys) reach the metadata store."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import require
from tests.integration.server import ServerProcess
from tests.integration.test_trust_notary import Notary, make_file
from trustyard.crypto.notary_keys import PublicKey, canonical_json, verify

pytestmark = [pytest.mark.needs_notary, pytest.mark.needs_openssl, pytest.mark.slow]

TOKEN, PIN = "trust-keys", "4321"


def make_token(tmp: Path) -> dict[str, str]:
    util = require("softhsm2-util")
    (tmp / "tokens").mkdir()
    conf = tmp / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tmp / 'tokens'}\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    subprocess.run(
        [util, "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "8765"],
        check=True, capture_output=True, env={**os.environ, **env},
    )  # fmt: skip
    return env


def token_objects(env: dict[str, str]) -> list[str]:
    """`pkcs11-tool --list-objects` lines naming our keys (label trustyard-trust)."""
    from trustyard.crypto.pkcs11 import find_module

    out = subprocess.run(
        [require("pkcs11-tool"), "--module", find_module(None), "--token-label", TOKEN,
         "--login", "--pin", PIN, "--list-objects"],
        check=True, capture_output=True, env={**os.environ, **env}, text=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if "Object" in line or "label" in line]


@pytest.fixture(scope="module")
def hsm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    tmp = tmp_path_factory.mktemp("trusthsm")
    env = make_token(tmp)
    srv = ServerProcess(
        tmp / "data",
        extra_env={
            **env,
            "TRUSTYARD_TRUST__KEY_STORE": f"pkcs11:token={TOKEN}",
            "TRUSTYARD_TRUST__KEY_STORE_PIN": PIN,
            # Every GET of timestamp.json re-signs it (less than the refresh window is left).
            "TRUSTYARD_TRUST__TIMESTAMP_EXPIRY_DAYS": "1",
            "TRUSTYARD_TRUST__TIMESTAMP_REFRESH_HOURS": "48",
        },
    ).start()
    yield srv, env
    srv.stop()


def stored_keys(srv: ServerProcess) -> list[tuple[str, bytes]]:
    with sqlite3.connect(srv.data_dir / "metadata.db") as db:
        return db.execute("SELECT role, private FROM tuf_server_keys").fetchall()


def check_signed_by(data: bytes, key: PublicKey) -> None:
    envelope = json.loads(data)
    sigs = [s for s in envelope["signatures"] if s["keyid"] == key.key_id]
    assert sigs, f"not signed by {key.key_id}"
    message = canonical_json(envelope["signed"])
    assert verify(key, sigs[0]["method"], base64.b64decode(sigs[0]["sig"]), message)


def test_token_keys_with_the_notary_client(
    hsm_server: tuple[ServerProcess, dict], tmp_path: Path
) -> None:
    srv, env = hsm_server
    gun = "127.0.0.1/team/hsm"
    base = f"{srv.url}/v2/{gun}/_trust/tuf"
    ts_key = PublicKey.from_json(httpx.get(f"{base}/timestamp.key").json())
    assert ts_key.keytype == "ecdsa"
    assert PublicKey.from_json(httpx.get(f"{base}/timestamp.key").json()) == ts_key  # stable

    owner = Notary(srv, tmp_path / "owner")
    owner.run("init", gun, "-p")
    owner.run("key", "rotate", gun, "snapshot", "--server-managed")
    owner.run("add", gun, "v1", str(make_file(tmp_path, "a", b"one\n")), "-p")
    fresh = Notary(srv, tmp_path / "fresh")
    assert "v1" in fresh.run("list", gun)

    # The timestamp is signed in the token, and re-signed (new version) when fetched.
    first = httpx.get(f"{base}/timestamp.json").content
    second = httpx.get(f"{base}/timestamp.json").content
    check_signed_by(first, ts_key)
    check_signed_by(second, ts_key)
    assert json.loads(second)["signed"]["version"] > json.loads(first)["signed"]["version"]
    snap_key = PublicKey.from_json(httpx.get(f"{base}/snapshot.key").json())
    check_signed_by(httpx.get(f"{base}/snapshot.json").content, snap_key)

    # Rotation: POST makes a new token key; the client's new root adopts it.
    owner.run("key", "rotate", gun, "timestamp", "--server-managed")
    new_ts = PublicKey.from_json(httpx.get(f"{base}/timestamp.key").json())
    assert new_ts != ts_key and new_ts.keytype == "ecdsa"
    owner.run("add", gun, "v2", str(make_file(tmp_path, "b", b"two\n")), "-p")
    check_signed_by(httpx.get(f"{base}/timestamp.json").content, new_ts)
    listing = Notary(srv, tmp_path / "fresh2").run("list", gun)
    assert "v1" in listing and "v2" in listing
    assert "v2" in fresh.run("list", gun)  # the TOFU client follows the rotation

    # The store holds references only; the private keys stay in the token.
    stored = stored_keys(srv)
    roles = sorted(role for role, _ in stored)
    assert roles == ["snapshot", "timestamp", "timestamp"]
    assert all(private.startswith(b"pkcs11:id=") for _, private in stored)
    assert not any(b"PRIVATE KEY" in private for _, private in stored)
    objects = "\n".join(token_objects(env))
    assert objects.count("Private Key Object") == 3 and "trustyard-trust" in objects


def test_wrong_pin_stops_the_server_at_startup(
    hsm_server: tuple[ServerProcess, dict], tmp_path: Path
) -> None:
    _, env = hsm_server
    srv = ServerProcess(
        tmp_path / "data",
        extra_env={
            **env,
            "TRUSTYARD_TRUST__KEY_STORE": f"pkcs11:token={TOKEN}?pin-value=0000",
        },
    )
    with pytest.raises(RuntimeError, match="wrong PIN"):
        srv.start()
    srv.stop()
    missing = ServerProcess(
        tmp_path / "data2",
        extra_env={**env, "TRUSTYARD_TRUST__KEY_STORE": f"pkcs11:token=nope?pin-value={PIN}"},
    )
    with pytest.raises(RuntimeError, match="no such token"):
        missing.start()
    missing.stop()
    assert "0000" not in (missing.log() + srv.log()).replace("pin-value=***", "")
