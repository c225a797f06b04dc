"""A small registry for the web UI tests, built through the real API (in-process or a served
process): three accounts, private and anonymous-readable repositories, a cosign policy, and
images signed by the trusted key, by a foreign key, and not at all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tests.inprocess.helpers import make_image, make_index, push_blob, push_image, put_manifest
from trustyard.auth.users import Accounts
from trustyard.config import AuthSettings, Settings
from trustyard.signing import cosign
from trustyard.wiring import open_database
from trustyard.wiring.auth import login_limiter

PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "root": "root-pw"}
POLICY_RULE = "cosign-required"


def ui_config(data_dir: Path, key_path: Path) -> dict[str, Any]:
    """Settings values: token auth, and a cosign policy on alice's repositories."""
    return {
        "data_dir": data_dir,
        "auth": {"mode": "token", "bcrypt_cost": 4},
        "policy": {
            "rules": [
                {
                    "name": POLICY_RULE,
                    "repositories": ["alice/*"],
                    "require": {"kind": "cosign", "keys": [str(key_path)]},
                }
            ]
        },
    }


def make_keys(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePrivateKey]:
    """The trusted cosign key (its public half written to `directory/cosign.pub`) and another."""
    trusted = ec.generate_private_key(ec.SECP256R1())
    (directory / "cosign.pub").write_bytes(cosign.public_pem(trusted.public_key()))
    return trusted, ec.generate_private_key(ec.SECP256R1())


async def add_accounts(settings: Settings) -> None:
    """alice and bob (users), root (admin); `public/*` readable by anyone."""
    database = await open_database(settings.metadata_target, create=True)
    try:
        accounts = Accounts(
            database.auth, limiter=login_limiter(AuthSettings(), None), bcrypt_cost=4
        )
        for name, password in PASSWORDS.items():
            await accounts.add_user(name, password, admin=name == "root")
        await database.auth.add_rule("anonymous", "public/*", ("pull",))
    finally:
        await database.close()


@dataclass(frozen=True)
class World:
    signed: str  # alice/app:signed, cosign-signed by the trusted key
    forged: str  # alice/app:forged, signed by a key the policy does not trust
    unsigned: str  # alice/app:unsigned
    index: str  # alice/app:multi, an index of two platforms
    secret: str  # bob/secret:v1
    public: str  # public/base:latest


async def _login(client: httpx.AsyncClient, user: str, scope: str) -> None:
    r = await client.get(
        "/auth/token",
        params={"service": "trustyard", "scope": scope},
        auth=(user, PASSWORDS[user]),
    )
    assert r.status_code == 200, r.text
    client.headers["Authorization"] = f"Bearer {r.json()['token']}"


async def _sign(
    client: httpx.AsyncClient, name: str, digest: str, key: ec.EllipticCurvePrivateKey
) -> None:
    artifact = cosign.tag_artifact(cosign.KeySigner(key), f"registry.test/{name}", digest, None)
    for blob in artifact.blobs:
        await push_blob(client, name, blob)
    assert artifact.tag is not None
    r = await put_manifest(client, name, artifact.tag, artifact.manifest, cosign.OCI_MANIFEST)
    assert r.status_code == 201, r.text


async def populate(
    client: httpx.AsyncClient,
    trusted: ec.EllipticCurvePrivateKey,
    foreign: ec.EllipticCurvePrivateKey,
) -> World:
    await _login(client, "alice", "repository:alice/app:push,pull")
    signed = await push_image(client, "alice/app", make_image("signed", n_layers=2), "signed")
    forged = await push_image(client, "alice/app", make_image("forged"), "forged")
    unsigned = await push_image(client, "alice/app", make_image("unsigned"), "unsigned")
    amd, arm = make_image("multi-amd"), make_image("multi-arm", arch="arm64")
    await push_image(client, "alice/app", amd, amd.digest)
    await push_image(client, "alice/app", arm, arm.digest)
    index = make_index(amd, arm)
    r = await put_manifest(
        client, "alice/app", "multi", index, "application/vnd.oci.image.index.v1+json"
    )
    assert r.status_code == 201, r.text
    await _sign(client, "alice/app", signed, trusted)
    await _sign(client, "alice/app", forged, foreign)
    await _login(client, "bob", "repository:bob/secret:push,pull")
    secret = await push_image(client, "bob/secret", make_image("bob"), "v1")
    await _login(client, "root", "repository:public/base:push,pull")
    public = await push_image(client, "public/base", make_image("public"), "latest")
    del client.headers["Authorization"]
    return World(signed, forged, unsigned, r.headers["Docker-Content-Digest"], secret, public)
