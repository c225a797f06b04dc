"""The trust client's one error."""


class TrustError(Exception):
    """A trust operation failed; the message is one line for the user (never a secret)."""
