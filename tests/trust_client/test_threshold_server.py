"""Server-side threshold counting through a running `trustyard serve`: one private key listed as
`ecdsa` and in two `ecdsa-x509` certificates is one signer, so it cannot meet a threshold of 3
(or a root threshold of 2) alone. Distinct keys still can."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.server import ServerProcess
from tests.trust_client.evil import Collection, x509_key
from trustyard.crypto.notary_keys import PrivateKey, PublicKey

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("threshold") / "data").start()
    yield s
    s.stop()


def publish(srv: ServerProcess, gun: str, files: dict[str, bytes]) -> httpx.Response:
    parts = [("files", (role, data, "application/octet-stream")) for role, data in files.items()]
    return httpx.post(f"{srv.url}/v2/{gun}/_trust/tuf/", files=parts, timeout=30)


def server_timestamp_key(srv: ServerProcess, gun: str) -> PublicKey:
    r = httpx.get(f"{srv.url}/v2/{gun}/_trust/tuf/timestamp.key", timeout=30)
    assert r.status_code == 200, r.text
    return PublicKey.from_json(r.json())


def collection_files(coll: Collection, targets_signers: list[tuple[str, PrivateKey]],
                     root_signers: list[tuple[str, PrivateKey]] | None = None) -> dict[str, bytes]:  # fmt: skip
    root = coll.root(signers=root_signers)
    targets = coll.targets({}, signers=targets_signers)
    return {
        "root": root,
        "targets": targets,
        "snapshot": coll.snapshot({"root": root, "targets": targets}),
    }


def test_one_key_in_three_forms_does_not_meet_a_targets_threshold_of_three(
    srv: ServerProcess, tmp_path: Path
) -> None:
    gun = f"{srv.host}/threshold/targets"
    ts = server_timestamp_key(srv, gun)
    shared = PrivateKey.generate("ecdsa")
    forms = [shared.public, x509_key(shared, "a"), x509_key(shared, "b")]
    coll = Collection(gun, role_keys={"targets": (forms, 3), "timestamp": ([ts], 1)})
    r = publish(srv, gun, collection_files(coll, [(k.key_id, shared) for k in forms]))
    assert r.status_code == 400, r.text
    assert "targets is not signed by the threshold" in r.text
    assert httpx.get(f"{srv.url}/v2/{gun}/_trust/tuf/root.json").status_code == 404
    # three distinct keys: accepted
    keys = [shared, PrivateKey.generate("ecdsa"), PrivateKey.generate("ed25519")]
    good = Collection(
        gun, role_keys={"targets": ([k.public for k in keys], 3), "timestamp": ([ts], 1)}
    )
    r = publish(srv, gun, collection_files(good, [(k.public.key_id, k) for k in keys]))
    assert r.status_code == 200, r.text


def test_one_key_in_two_forms_does_not_meet_a_root_threshold_of_two(
    srv: ServerProcess, tmp_path: Path
) -> None:
    gun = f"{srv.host}/threshold/root"
    ts = server_timestamp_key(srv, gun)
    shared = PrivateKey.generate("ecdsa")
    forms = [shared.public, x509_key(shared, gun)]
    coll = Collection(gun, root_key=shared, role_keys={"root": (forms, 2), "timestamp": ([ts], 1)})
    files = collection_files(
        coll,
        [(coll.targets_key.public.key_id, coll.targets_key)],
        root_signers=[(k.key_id, shared) for k in forms],
    )
    r = publish(srv, gun, files)
    assert r.status_code == 400, r.text
    assert "root is not signed by the threshold of its own root keys" in r.text
