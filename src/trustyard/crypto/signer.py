"""Open the signer a command-line argument names: a key file, or a PKCS#11 URI (RFC 7512).

Its own module so `ecdsa` (file keys) and `pkcs11` (token keys, which reuse ecdsa's formats) do
not import each other.
"""

from __future__ import annotations

from pathlib import Path

from trustyard.crypto.ecdsa import FileKeySigner, Signer
from trustyard.crypto.pkcs11 import Pkcs11Signer


def open_signer(spec: str) -> Signer:
    """The signer a `-k/-v/-x/-i` argument names: a key file, or a `pkcs11:` URI (RFC 7512)."""
    if spec.startswith("pkcs11:"):
        return Pkcs11Signer.from_uri(spec)
    return FileKeySigner.from_file(Path(spec))
