"""What a metadata backend signals, in its own backend-neutral terms (part of the metadata ports).

Backends raise these, never a client-facing `RegistryError` and never SQLAlchemy's or a
driver's exceptions for a database that cannot answer: `metadata/outages.py` converts those
where every statement and connection passes (the engines). `trustyard.http.errors` maps each
type to the spec's code, status and message, once.
"""

from __future__ import annotations

from typing import Literal


class MetadataError(Exception):
    """Base of the metadata backends' errors; `message` is fit to show a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MetadataUnavailable(MetadataError):
    """The database cannot answer right now (down, starting, shutting down, busy beyond the
    wait, out of connections); the transaction did not commit, so a retry is safe."""

    def __init__(self, reason: str = "") -> None:
        super().__init__("the metadata database is unavailable; nothing was changed, retry shortly")
        self.reason = reason


class MissingReference(MetadataError):
    """A manifest names a blob (or an index a child manifest) the repository does not hold."""

    def __init__(self, repository: str, digest: str, kind: Literal["blob", "manifest"]) -> None:
        if kind == "blob":
            message = (
                f"manifest references blob {digest}, which is not in repository {repository}; "
                "push the blob first"
            )
        else:
            message = (
                f"index references manifest {digest}, which is not in repository {repository}; "
                "push the child manifests first"
            )
        super().__init__(message)
        self.repository, self.digest, self.kind = repository, digest, kind
