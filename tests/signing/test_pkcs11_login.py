"""One PKCS#11 login (crypto.pkcs11.Pkcs11Token) under the signing toolkit's signer, the trust
client's token keys and the trust server's key store, against a real SoftHSM2 token."""

from __future__ import annotations

import pytest

from trustyard.crypto.errors import TokenError
from trustyard.crypto.notary_keys import verify
from trustyard.crypto.pkcs11 import Pkcs11Token, Pkcs11Uri
from trustyard.trust.client.keys import KeyStoreError as ClientKeyError
from trustyard.trust.client.keys import TokenSigner
from trustyard.trust.server.hsm_keys import KeyStoreError, TokenKeyStore

from .hsm import PIN, TOKEN, Token


def test_token_login_and_its_messages(hsm: Token) -> None:
    token = Pkcs11Token(Pkcs11Uri.parse(f"pkcs11:token={TOKEN}?pin-value={PIN}", key=False))
    with token.session() as session:
        assert session is not None
    wrong = Pkcs11Token(Pkcs11Uri.parse(f"pkcs11:token={TOKEN}?pin-value=0000", key=False))
    with pytest.raises(TokenError, match=f"pkcs11:token={TOKEN}: wrong PIN"), wrong.session():
        pass
    with pytest.raises(TokenError, match=r"no such token \(tokens present: 'trustyard-test'"):
        Pkcs11Token(Pkcs11Uri.parse("pkcs11:token=absent?pin-value=1", key=False))
    with pytest.raises(TokenError, match="no PIN"):
        Pkcs11Token(Pkcs11Uri.parse(f"pkcs11:token={TOKEN}", key=False)).session().__enter__()


def test_server_key_store_generates_loads_and_signs_in_the_token(hsm: Token) -> None:
    store = TokenKeyStore(f"pkcs11:token={TOKEN}?module-path={hsm.module}", pin=PIN)
    made = store.generate()
    loaded = store.load(made.reference, made.public)
    assert verify(made.public, "ecdsa", loaded.sign(b"metadata"), b"metadata")
    assert not verify(made.public, "ecdsa", loaded.sign(b"metadata"), b"other")
    with pytest.raises(KeyStoreError, match=f"trust.key_store: pkcs11:token={TOKEN}: wrong PIN"):
        TokenKeyStore(f"pkcs11:token={TOKEN}", pin="0000")


def test_client_token_signer_uses_the_same_login(hsm: Token) -> None:
    signer = TokenSigner(hsm.uri("vendor"))
    assert verify(signer.public, "ecdsa", signer.sign(b"targets"), b"targets")
    with pytest.raises(ClientKeyError, match="wrong PIN"):
        TokenSigner(hsm.uri("vendor", pin="0000"))
