"""The PKCS#11 key store's configuration parsing, and the service's use of a key store: new
server keys are made there, the metadata store keeps only references, and a reference without a
configured store is refused. (The SoftHSM2 token itself is exercised end to end with the notary
client in tests/integration/test_trust_hsm_keys.py: SoftHSM2 reads its configuration once per
process, so a second token cannot be opened next to tests/signing's in one pytest run.)"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests.trust.helpers import GUN, Repo, close_service, open_service
from trustyard.crypto.notary_keys import PrivateKey, PublicKey, Signer
from trustyard.trust import model as m
from trustyard.trust.server.hsm_keys import (
    REFERENCE_PREFIX,
    KeyStoreError,
    is_token_reference,
    parse_store_uri,
)
from trustyard.trust.server.service import TrustService
from trustyard.trust.server.validation import ValidationFailure


def test_store_uri_names_a_token_and_a_pin() -> None:
    uri = parse_store_uri("pkcs11:token=trust?pin-value=1234&module-path=/x/lib.so")
    assert (uri.token, uri.pin, uri.module, uri.object, uri.id) == (
        "trust",
        "1234",
        "/x/lib.so",
        None,
        None,
    )
    assert parse_store_uri("pkcs11:token=trust", pin="99").pin == "99"
    assert parse_store_uri("pkcs11:?pin-value=1").token is None


def test_pin_source_file(tmp_path: Path) -> None:
    (tmp_path / "pin").write_text("5555\n")
    assert parse_store_uri(f"pkcs11:token=t?pin-source=file:{tmp_path / 'pin'}").pin == "5555"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("/usr/lib/softhsm.so", "must be a pkcs11: URI"),
        ("pkcs11:token=t", "no PIN"),
        ("pkcs11:token=t;object=k?pin-value=1", "names a token, not a key"),
        ("pkcs11:token=t;id=%01?pin-value=1", "names a token, not a key"),
        ("pkcs11:token=t;colour=red?pin-value=1", "unknown attribute 'colour'"),
        ("pkcs11:token=t?pin-value=1&pin-source=/x", "not both"),
    ],
)
def test_bad_store_uris(uri: str, message: str) -> None:
    with pytest.raises(KeyStoreError, match=message) as info:
        parse_store_uri(uri)
    assert "pin-value=1" not in str(info.value)


@dataclasses.dataclass
class _Held:
    key: PrivateKey
    token_id: bytes
    store: FakeStore

    @property
    def public(self) -> PublicKey:
        return self.key.public

    @property
    def method(self) -> str:
        return self.key.method

    @property
    def reference(self) -> bytes:
        return REFERENCE_PREFIX + self.token_id.hex().encode()

    def sign(self, message: bytes) -> bytes:
        self.store.signed += 1
        return self.key.sign(message)


class FakeStore:
    """A key store in memory, standing in for the token."""

    def __init__(self) -> None:
        self.keys: dict[bytes, _Held] = {}
        self.signed = 0

    def generate(self) -> _Held:
        held = _Held(PrivateKey.generate("ecdsa"), bytes([len(self.keys) + 1]) * 4, self)
        self.keys[held.reference] = held
        return held

    def load(self, reference: bytes, expected: PublicKey) -> Signer:
        held = self.keys[reference]
        assert held.public == expected
        return held


async def test_service_makes_and_uses_keys_in_the_store(tmp_path: Path) -> None:
    store = FakeStore()
    service = await open_service(tmp_path)
    service.key_store = store
    try:
        ts = await service.get_key(GUN, m.TIMESTAMP, "alice")
        assert ts.keytype == "ecdsa" and len(store.keys) == 1
        [record] = await service.store.server_keys(GUN, m.TIMESTAMP)
        assert is_token_reference(record.private) and b"PRIVATE" not in record.private
        repo = Repo()
        root = repo.root(ts.to_json())
        targets = repo.targets({"v1": b"one"})
        snapshot = repo.snapshot({"root": root, "targets": targets})
        await service.publish(GUN, {"root": root, "targets": targets, "snapshot": snapshot}, "a")
        assert store.signed == 1  # the timestamp, by the store's key

        # A fresh service (another worker) finds the key through its reference.
        other = TrustService(service.store, b"test-passphrase", key_store=store)
        timestamp = (await other.get_metadata(GUN, m.TIMESTAMP)).data
        assert m.parse_signed(m.TIMESTAMP, timestamp).meets(
            m.RoleKeys((ts.key_id,), 1), {ts.key_id: ts}
        )

        # Without the key store configured, a referenced key cannot sign: a clear refusal.
        bare = TrustService(service.store, b"test-passphrase")
        with pytest.raises(ValidationFailure, match="key_store is not configured"):
            await bare._signing_keys(GUN, m.parse_root(root), m.TIMESTAMP)
    finally:
        await close_service(service)
