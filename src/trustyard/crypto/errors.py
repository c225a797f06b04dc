"""Typed errors of key handling, signing and verification.

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


class TokenError(SigningError):
    """A PKCS#11 module, token, key or PIN could not be used."""
