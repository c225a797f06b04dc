"""Typed errors of the signing toolkit.

Every failure a user can cause is one of these, with a message that says what was expected; the
CLI turns them into one line and exit code 1, so no traceback ever reaches a user.
"""


class SigningError(Exception):
    """Base class: a signing operation was refused; nothing was changed on disk."""


class KeyFormatError(SigningError):
    """A key file is not what the chain needs (secp384r1, SEC1/PKCS#8 private, SPKI public)."""


class SignatureFormatError(SigningError):
    """A signature is not a DER-encoded ECDSA signature (or its hex is broken)."""


class VerificationError(SigningError):
    """A signature or digest did not verify."""


class LayoutError(SigningError):
    """An OCI image layout is missing, malformed or inconsistent (digests, sizes, JSON)."""


class ReferenceNotFoundError(LayoutError):
    """A tag or digest does not name a manifest in the layout (or names several)."""


class ArchiveError(SigningError):
    """An image archive is corrupt, truncated, unsafe (traversal, links) or of an unknown kind."""


class RemoteError(SigningError):
    """A registry could not be reached, refused a request, or answered something unusable."""


class TokenError(SigningError):
    """A PKCS#11 module, token, key or PIN could not be used."""
