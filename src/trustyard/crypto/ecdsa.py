"""ECDSA P-384 keys and signatures in the byte formats ir-sign and openssl exchange.

Private keys are SEC1 DER (`openssl ecparam -name secp384r1 -genkey -noout -outform DER`), public
keys SubjectPublicKeyInfo DER (`openssl ec -pubout -outform DER`), signatures DER ECDSA over
SHA-384 (`openssl dgst -sha384 -sign`). PEM and PKCS#8 are accepted on input because openssl makes
them by default; output is always the DER form, so files stay byte-compatible with ir-sign.

Signing goes through the small `Signer` protocol over a precomputed SHA-384 digest: that is what
a PKCS#11 token (CKM_ECDSA) offers too, so an HSM-backed signer (pkcs11.py) slots in unchanged.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from trustyard.crypto.errors import KeyFormatError, SignatureFormatError, VerificationError

CURVE_NAME = "secp384r1"
_HASH = hashes.SHA384()
_CHUNK = 1 << 20

EXPECTED_PRIVATE = (
    "an EC secp384r1 private key in SEC1 DER (openssl ecparam -name secp384r1 -genkey -noout "
    "-outform DER), PKCS#8 DER or PEM"
)
EXPECTED_PUBLIC = (
    "an EC secp384r1 public key in SubjectPublicKeyInfo DER (openssl ec -pubout -outform DER) "
    "or PEM"
)


class Signer(Protocol):
    """Something that holds a P-384 private key: a key file or a PKCS#11 token."""

    def public_key_der(self) -> bytes:
        """The signer's public key as SPKI DER (the bytes the root CA signs)."""
        ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a SHA-384 digest; return a DER ECDSA signature."""
        ...


class FileKeySigner:
    """A `Signer` over a private key loaded from a file (or bytes) into memory."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> FileKeySigner:
        return cls(load_private_key(read_key_file(path), str(path)))

    def public_key_der(self) -> bytes:
        return public_key_to_der(self._key.public_key())

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign(digest, ec.ECDSA(Prehashed(_HASH)))


def read_key_file(path: Path) -> bytes:
    """Read a key or signature file, turning I/O failures into a typed error."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFormatError(f"cannot read {path}: {exc.strerror or exc}") from None


def generate_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def private_key_to_der(key: ec.EllipticCurvePrivateKey) -> bytes:
    """SEC1 DER with named curve and public point: what `openssl ecparam -genkey -noout` writes."""
    return key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def public_key_to_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(spki_der: bytes) -> str:
    """Short, stable name of a public key: first 16 hex of sha256 over its SPKI DER."""
    return hashlib.sha256(spki_der).hexdigest()[:16]


def _is_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def _check_ec384(key: object, source: str, expected: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        kind = type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "")
        raise KeyFormatError(f"{source}: got a {kind} key, expected {expected}")
    if key.curve.name != CURVE_NAME:
        raise KeyFormatError(f"{source}: key is on curve {key.curve.name}, expected {expected}")


def load_private_key(data: bytes, source: str) -> ec.EllipticCurvePrivateKey:
    """Parse a P-384 private key (SEC1/PKCS#8, DER or PEM); say exactly what was wrong."""
    try:
        if _is_pem(data):
            key: object = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise KeyFormatError(
            f"{source}: key is password-protected; expected an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if _parses_as_public(data):
            raise KeyFormatError(
                f"{source}: this is a public key; expected {EXPECTED_PRIVATE}"
            ) from None
        raise KeyFormatError(f"{source}: not a private key; expected {EXPECTED_PRIVATE}") from None
    _check_ec384(key, source, EXPECTED_PRIVATE)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _parses_as_public(data: bytes) -> bool:
    try:
        if _is_pem(data):
            serialization.load_pem_public_key(data)
        else:
            serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def load_public_key(data: bytes, source: str) -> ec.EllipticCurvePublicKey:
    """Parse a P-384 SPKI public key (DER or PEM); a private key here is refused by name."""
    try:
        if _is_pem(data):
            key: object = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            load_private_key(data, source)
        except KeyFormatError:
            msg = f"{source}: not a public key; expected {EXPECTED_PUBLIC}"
            raise KeyFormatError(msg) from None
        raise KeyFormatError(
            f"{source}: this is a private key; expected its public half "
            "(trustyard sign extract-public)"
        ) from None
    _check_ec384(key, source, EXPECTED_PUBLIC)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def sha384_bytes(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def sha384_stream(stream: BinaryIO) -> bytes:
    """SHA-384 of a stream in constant memory (large files are signed without loading them)."""
    h = hashlib.sha384()
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
    return h.digest()


def sha384_file(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            return sha384_stream(f)
    except OSError as exc:
        raise VerificationError(f"cannot read {path}: {exc.strerror or exc}") from None


def check_signature_der(signature: bytes, source: str) -> None:
    """Refuse anything but a DER ECDSA-Sig-Value, naming what was expected."""
    try:
        decode_dss_signature(signature)
    except ValueError:
        hint = " (raw r||s? PEM?)" if len(signature) == 96 or signature.startswith(b"-----") else ""
        raise SignatureFormatError(
            f"{source}: not a DER ECDSA signature{hint}; expected the output of "
            "openssl dgst -sha384 -sign"
        ) from None


def verify_digest(
    public_key: ec.EllipticCurvePublicKey, signature: bytes, digest: bytes, what: str
) -> None:
    """Verify a DER ECDSA signature over a SHA-384 digest, or raise `VerificationError`."""
    check_signature_der(signature, what)
    try:
        public_key.verify(signature, digest, ec.ECDSA(Prehashed(_HASH)))
    except InvalidSignature:
        raise VerificationError(f"{what}: signature does not verify") from None
