"""Open the ir-sign signer a command-line argument names: a key file, or a PKCS#11 URI (RFC 7512).

Its own module so `ecdsa` (file keys) and `pkcs11` (token keys, which reuse ecdsa's formats) do
not import each other.
"""

from __future__ import annotations

from pathlib import Path

from trustyard.crypto.ecdsa import CURVE_NAME, FileKeySigner, Signer
from trustyard.crypto.errors import KeyFormatError
from trustyard.crypto.pkcs11 import Pkcs11Signer


def open_signer(spec: str) -> Signer:
    """The signer a `-k/-v/-x/-i` argument names: a key file, or a `pkcs11:` URI (RFC 7512).

    ir-sign's chain is ECDSA P-384 over SHA-384 by definition (the vendor and root keys, every
    signature), so a token key on P-256, fine for cosign and trust, is refused here by name.
    """
    if spec.startswith("pkcs11:"):
        signer = Pkcs11Signer.from_uri(spec)
        if signer.curve != CURVE_NAME:
            raise KeyFormatError(
                f"{signer.uri.describe()}: key is on curve {signer.curve}; ir-sign keys are "
                f"P-384 ({CURVE_NAME}, signatures over SHA-384). A P-256 token key can sign "
                "with `trustyard sign cosign` and `trustyard trust`"
            )
        return signer
    return FileKeySigner.from_file(Path(spec))
