"""The simple-signature store's records and errors (the port side of `signatures_sql`).

`registry.signatures` owns the `SignatureStore` Protocol; the records it passes and the error a
backend raises live here, so the use case never imports a backend module.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredSignature:
    name: str
    content: bytes
    created_at: float


class ManifestMissing(LookupError):
    """The manifest a signature was PUT for is not in the repository."""
