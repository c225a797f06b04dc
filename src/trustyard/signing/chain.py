"""The two-link chain of trust ir-sign uses: root CA key → vendor key → image config.

There is no X.509: the root CA signs the vendor's SPKI DER bytes, and the vendor public key plus
that signature travel together (in the manifest annotations) like a minimal certificate.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.crypto.ecdsa import Signer, key_id, sha384_bytes, verify_digest
from trustyard.signing.errors import SigningError, VerificationError


def endorse_vendor_key(root: Signer, vendor_pub_der: bytes) -> bytes:
    """Root CA's DER signature over the vendor SPKI DER (as `openssl dgst -sha384 -sign`)."""
    return root.sign_digest(sha384_bytes(vendor_pub_der))


def verify_vendor_key(
    root_pub: ec.EllipticCurvePublicKey, vendor_pub_der: bytes, endorsement: bytes, what: str
) -> None:
    """Check that the root CA signed exactly these vendor key bytes."""
    try:
        verify_digest(root_pub, endorsement, sha384_bytes(vendor_pub_der), what)
    except VerificationError:
        raise VerificationError(
            f"{what}: not a signature of this root CA over vendor key {key_id(vendor_pub_der)}"
        ) from None


def vendor_endorsement(
    vendor: Signer,
    *,
    endorsement: bytes | None = None,
    root_pub: ec.EllipticCurvePublicKey | None = None,
    root: Signer | None = None,
) -> bytes:
    """The vendor key's endorsement for signing, in either ir-sign scenario.

    Realistic: `endorsement` + `root_pub` are given and verified first, so a vendor never
    publishes an image whose chain cannot verify. Simplified: `root` is at hand and signs now.
    """
    vendor_pub = vendor.public_key_der()
    if root is not None and endorsement is None and root_pub is None:
        return endorse_vendor_key(root, vendor_pub)
    if root is None and endorsement is not None and root_pub is not None:
        verify_vendor_key(root_pub, vendor_pub, endorsement, "vendor public key signature")
        return endorsement
    raise SigningError(
        "pass either the vendor key signature and the root CA public key (-s SIG -c PUB) "
        "or the root CA private key (-x PRV)"
    )
