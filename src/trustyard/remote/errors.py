"""The one error of talking to another server."""

from trustyard.crypto.errors import SigningError


class RemoteError(SigningError):
    """A registry could not be reached, refused a request, or answered something unusable."""
