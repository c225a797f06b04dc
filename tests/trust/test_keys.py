"""Canonical JSON (byte-exact with Notary's), key IDs, signatures, keys at rest."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustyard.crypto.notary_keys import KeyError_, PrivateKey, PublicKey, canonical_json, verify


def test_canonical_json_matches_notarys_dialect() -> None:
    # Notary's MarshalCanonical: sorted keys, no spaces, only \ and " escaped; control bytes,
    # <, > and & raw (Go's encoding/json would write \u003c etc.), non-ASCII as UTF-8.
    value = {"b": 'a<b>&c"\\\x01\x1f', "a": [1, True, None, "é"], "c": {"z": 2.0, "y": {}}}
    assert canonical_json(value) == (
        b'{"a":[1,true,null,"\xc3\xa9"],"b":"a<b>&c\\"\\\\\x01\x1f","c":{"y":{},"z":2}}'
    )


def test_canonical_json_refuses_fractions() -> None:
    with pytest.raises(KeyError_):
        canonical_json({"x": 1.5})


def test_key_id_is_sha256_of_canonical_key_json() -> None:
    key = PublicKey("ed25519", bytes(range(32)))
    public = base64.b64encode(bytes(range(32))).decode()
    expected = hashlib.sha256(
        ('{"keytype":"ed25519","keyval":{"private":null,"public":"' + public + '"}}').encode()
    ).hexdigest()
    assert key.key_id == expected


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa"])
def test_sign_verify_and_tamper(algorithm: str) -> None:
    key = PrivateKey.generate(algorithm)  # type: ignore[arg-type]
    sig = key.sign(b"message")
    assert verify(key.public, key.method, sig, b"message")
    assert not verify(key.public, key.method, sig, b"messagE")
    assert not verify(key.public, "rsapss", sig, b"message")  # wrong method for the key type


def test_ecdsa_signatures_are_raw_r_s_over_sha256() -> None:
    key = PrivateKey.generate("ecdsa")
    sig = key.sign(b"payload")
    assert len(sig) == 64  # P-256: 32-byte r ‖ 32-byte s, not DER
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    pub = key.public.crypto_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    pub.verify(encode_dss_signature(r, s), b"payload", ec.ECDSA(hashes.SHA256()))


def test_private_keys_are_encrypted_at_rest() -> None:
    key = PrivateKey.generate("ed25519")
    pem = key.encrypt(b"secret")
    assert b"ENCRYPTED PRIVATE KEY" in pem
    assert PrivateKey.decrypt(pem, b"secret").public == key.public
    with pytest.raises(ValueError):
        PrivateKey.decrypt(pem, b"wrong")


def test_public_key_parsing_refuses_private_material_and_bad_types() -> None:
    with pytest.raises(KeyError_):
        PublicKey.from_json({"keytype": "ed25519", "keyval": {"public": "AAAA", "private": "x"}})
    with pytest.raises(KeyError_):
        PublicKey.from_json({"keytype": "dsa", "keyval": {"public": "AAAA", "private": None}})
    with pytest.raises(KeyError_):
        PublicKey.from_json(
            {"keytype": "ecdsa", "keyval": {"public": "bm90IGRlcg==", "private": None}}
        )
