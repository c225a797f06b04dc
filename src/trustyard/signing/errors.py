"""Typed errors of the signing toolkit: the crypto and remote errors plus layouts and archives.

Every failure a user can cause is one of these, with a message that says what was expected; the
CLI turns them into one line and exit code 1, so no traceback ever reaches a user.
"""

from trustyard.crypto.errors import (
    KeyFormatError,
    SignatureFormatError,
    SigningError,
    TokenError,
    VerificationError,
)
from trustyard.remote.errors import RemoteError

__all__ = [
    "ArchiveError",
    "KeyFormatError",
    "LayoutError",
    "ReferenceNotFoundError",
    "RemoteError",
    "SignatureFormatError",
    "SigningError",
    "TokenError",
    "VerificationError",
]


class LayoutError(SigningError):
    """An OCI image layout is missing, malformed or inconsistent (digests, sizes, JSON)."""


class ReferenceNotFoundError(LayoutError):
    """A tag or digest does not name a manifest in the layout (or names several)."""


class ArchiveError(SigningError):
    """An image archive is corrupt, truncated, unsafe (traversal, links) or of an unknown kind."""
