"""What a storage backend signals, in its own backend-neutral terms (part of the storage ports).

Backends raise these, never a client-facing `RegistryError` and never their library's exceptions
(botocore, OSError meaning "unreachable"): those are converted where the backend calls the
library. `trustyard.http.errors` maps each type to the spec's code, status and message, once.
"""

from __future__ import annotations

from typing import Any


class StorageError(Exception):
    """Base of the storage backends' errors; `message` is fit to show a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BlobNotFound(StorageError):
    """No committed blob with this digest."""

    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} is not stored")
        self.digest = digest


class UploadNotFound(StorageError):
    """No upload session with this id (never issued, finished or cancelled)."""

    def __init__(self, message: str = "upload not found") -> None:
        super().__init__(message)


class UploadBusy(StorageError):
    """Another request holds this upload right now."""

    def __init__(self) -> None:
        super().__init__("another request is writing to this upload; wait for it and retry")


class OffsetMismatch(StorageError):
    """A chunk that does not start where the upload ends; `size` is what the upload holds."""

    def __init__(self, offset: int, size: int) -> None:
        super().__init__(f"chunk starts at byte {offset} but the upload has {size} bytes")
        self.offset, self.size = offset, size


class SizeExceeded(StorageError):
    """The blob grew past the configured limit (the upload is cut back to where it was)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"blob exceeds the size limit of {limit} bytes")
        self.limit = limit


class DigestMismatch(StorageError):
    """The uploaded bytes hash to `actual`, not to the digest the client named."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"uploaded content has digest {actual}, not {expected}")
        self.expected, self.actual = expected, actual

    @property
    def detail(self) -> dict[str, Any]:
        return {"expected": self.expected, "actual": self.actual}


class StorageUnavailable(StorageError):
    """The storage service cannot answer right now (down, unreachable, failing); retry later."""

    def __init__(
        self, message: str = "the object storage is unavailable; nothing was changed, retry shortly"
    ) -> None:
        super().__init__(message)
