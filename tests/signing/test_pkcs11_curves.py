"""Token keys on P-256 and P-384 wherever a format allows them (issue 19 item 3), and no OpenSSL
error left behind by the PKCS#11 module (item 4; the TLS proof is
tests/integration/test_trust_hsm_tls.py)."""

from __future__ import annotations

import ctypes
import hashlib
import ssl

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.cli.signatures import open_cosign_signer
from trustyard.crypto.ecdsa import public_key_to_der
from trustyard.crypto.errors import KeyFormatError
from trustyard.crypto.notary_keys import verify
from trustyard.crypto.pkcs11 import Pkcs11Signer, curve_of
from trustyard.crypto.signer import open_signer
from trustyard.signing import cosign
from trustyard.trust.client.keys import TokenSigner

from .hsm import Token

# (label in the session token, curve, cosign's hash, Notary r||s length)
KEYS = [("p256", "secp256r1", "sha256", 64), ("vendor", "secp384r1", "sha384", 96)]


@pytest.mark.parametrize(("label", "curve", "hash_name", "_size"), KEYS)
def test_cosign_token_signer_hashes_with_the_curve(
    hsm: Token, label: str, curve: str, hash_name: str, _size: int
) -> None:
    signer = open_cosign_signer(hsm.uri(label))  # what `trustyard sign cosign --key` opens
    assert signer.public_key().curve.name == curve
    sig = signer.sign(b"payload")
    cosign.verify_signature(signer.public_key(), b"payload", sig, hash_name)  # raises if wrong
    assert cosign.hash_name(curve, None) == hash_name


@pytest.mark.parametrize(("label", "curve", "_hash", "size"), KEYS)
def test_notary_token_signer_on_both_curves(
    hsm: Token, label: str, curve: str, _hash: str, size: int
) -> None:
    signer = TokenSigner(hsm.uri(label))
    sig = signer.sign(b"root.json")
    assert len(sig) == size  # raw r||s, two curve-size halves, as Notary's ecdsa wants
    assert verify(signer.public, "ecdsa", sig, b"root.json")  # SHA-256 whatever the curve
    assert not verify(signer.public, "ecdsa", sig, b"other")


def test_ir_sign_keeps_p384_and_says_why(hsm: Token) -> None:
    assert open_signer(hsm.uri("vendor")).public_key_der()
    with pytest.raises(KeyFormatError, match=r"secp256r1; ir-sign keys are P-384 \(secp384r1"):
        open_signer(hsm.uri("p256"))


def test_other_curves_are_refused_naming_the_supported_ones() -> None:
    der = public_key_to_der(ec.generate_private_key(ec.SECP521R1()).public_key())
    with pytest.raises(KeyFormatError, match=r"secp521r1; PKCS#11 keys must be P-256 .* P-384"):
        curve_of(der, "pkcs11:token=t;object=k")


def test_token_operations_leave_no_openssl_error(hsm: Token) -> None:
    """A failed libcrypto call (the kind SoftHSM2 makes) leaves an error on this thread's queue,
    the queue Python's ssl reads; a token operation ends with that queue empty."""
    libcrypto = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
    libcrypto.ENGINE_by_id.argtypes, libcrypto.ENGINE_by_id.restype = (
        [ctypes.c_char_p],
        ctypes.c_void_p,
    )
    libcrypto.ERR_peek_error.restype = ctypes.c_ulong
    assert libcrypto.ENGINE_by_id(b"no-such-engine") is None
    assert libcrypto.ERR_peek_error() != 0
    signer = Pkcs11Signer.from_uri(hsm.uri("p256"))
    signer.sign_digest(hashlib.sha256(b"x").digest())
    assert libcrypto.ERR_peek_error() == 0
