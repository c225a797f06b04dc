"""The spec's error codes, defined once: code, HTTP status and default message.

Every layer raises `RegistryError`; `trustyard.http.errors` is the one place it becomes a response.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(Enum):
    """OCI Distribution error codes (spec table "Error Codes") plus Docker's extras."""

    BLOB_UNKNOWN = ("BLOB_UNKNOWN", 404, "blob unknown to registry")
    BLOB_UPLOAD_INVALID = ("BLOB_UPLOAD_INVALID", 400, "blob upload invalid")
    BLOB_UPLOAD_UNKNOWN = ("BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry")
    DIGEST_INVALID = ("DIGEST_INVALID", 400, "provided digest did not match uploaded content")
    MANIFEST_BLOB_UNKNOWN = (
        "MANIFEST_BLOB_UNKNOWN",
        400,  # Distribution's status; containerd reads a 400 as "push the missing child"
        "manifest references a manifest or blob unknown to registry",
    )
    MANIFEST_INVALID = ("MANIFEST_INVALID", 400, "manifest invalid")
    # Docker's: a schema 1 manifest whose JWS signatures do not verify
    MANIFEST_UNVERIFIED = ("MANIFEST_UNVERIFIED", 400, "manifest failed signature verification")
    MANIFEST_UNKNOWN = ("MANIFEST_UNKNOWN", 404, "manifest unknown to registry")
    NAME_INVALID = ("NAME_INVALID", 400, "invalid repository name")
    NAME_UNKNOWN = ("NAME_UNKNOWN", 404, "repository name not known to registry")
    SIZE_INVALID = ("SIZE_INVALID", 400, "provided length did not match content length")
    UNAUTHORIZED = ("UNAUTHORIZED", 401, "authentication required")
    DENIED = ("DENIED", 403, "requested access to the resource is denied")
    UNSUPPORTED = ("UNSUPPORTED", 405, "the operation is unsupported")
    TOOMANYREQUESTS = ("TOOMANYREQUESTS", 429, "too many requests")
    RANGE_INVALID = ("BLOB_UPLOAD_INVALID", 416, "requested range not satisfiable")
    TOO_LARGE = ("SIZE_INVALID", 413, "payload too large")
    PAGINATION_INVALID = ("PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested")
    UNAVAILABLE = ("UNAVAILABLE", 503, "service unavailable")
    # The token endpoint's malformed form (OAuth2's invalid_request), not a /v2/ error.
    TOKEN_REQUEST_INVALID = ("INVALID_REQUEST", 400, "malformed token request")
    UNKNOWN = ("UNKNOWN", 500, "unknown error")
    # The namespace authority's statements (extensions API, docs/authority.md); ours, not OCI's.
    STATEMENT_INVALID = ("STATEMENT_INVALID", 400, "authority statement invalid")
    STATEMENT_UNKNOWN = ("STATEMENT_UNKNOWN", 404, "authority statement unknown")
    STATEMENT_CONFLICT = ("STATEMENT_CONFLICT", 409, "another statement has this id")
    # A query parameter the handler reads once was repeated (or is malformed): 400, not 405.
    PARAMETER_INVALID = ("UNSUPPORTED", 400, "invalid query parameter")

    def __init__(self, code: str, status: int, message: str) -> None:
        self.code = code
        self.status = status
        self.default_message = message


class RegistryError(Exception):
    """A failure the client must hear about, with the spec's code and a human message."""

    def __init__(
        self,
        code: ErrorCode,
        message: str | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.code = code
        self.message = message or code.default_message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(f"{code.code}: {self.message}")

    @property
    def status(self) -> int:
        return self.code.status

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"code": self.code.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return {"errors": [entry]}
