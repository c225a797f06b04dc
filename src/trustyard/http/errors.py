"""The one place errors become HTTP responses: one table, two groups of codes.

- The registry group (OCI distribution spec codes, `{"errors":[{code, message, detail?}]}`):
  `RegistryError`s of the use cases and the token endpoint, and the backends' own error types
  (`storage/errors.py`, `metadata/errors.py`), each translated here to its spec code.
- The Notary group (`notary.api.v1` codes, the same JSON envelope): the trust server's typed
  exceptions, which only the trust routes raise.

Anything else is `unexpected`: a backend outage found in its chain answers 503 with
`Retry-After` on every route (registry, token and trust alike), the rest 500 without a traceback.
Third-party exceptions never get here: the backends convert them where they call their library.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from trustyard.metadata.errors import MetadataError, MetadataUnavailable, MissingReference
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.storage.errors import (
    BlobNotFound,
    DigestMismatch,
    OffsetMismatch,
    SizeExceeded,
    StorageError,
    StorageUnavailable,
    UploadBusy,
    UploadNotFound,
)
from trustyard.trust.server.service import InvalidRequest, NotFound
from trustyard.trust.server.validation import ValidationFailure

log = structlog.get_logger("trustyard.http")
trust_log = structlog.get_logger("trustyard.trust")

RETRY_AFTER_SECONDS = "5"
BackendError = StorageError | MetadataError


# -- the registry group: backend errors -> spec codes ----------------------------------------------
def _retry(code: ErrorCode) -> Callable[[Any], RegistryError]:
    return lambda e: RegistryError(code, e.message, headers={"Retry-After": RETRY_AFTER_SECONDS})


def _plain(code: ErrorCode) -> Callable[[Any], RegistryError]:
    return lambda e: RegistryError(code, e.message)


BACKEND_CODES: dict[type[Exception], Callable[[Any], RegistryError]] = {
    BlobNotFound: _plain(ErrorCode.BLOB_UNKNOWN),
    UploadNotFound: _plain(ErrorCode.BLOB_UPLOAD_UNKNOWN),
    UploadBusy: _plain(ErrorCode.RANGE_INVALID),
    OffsetMismatch: lambda e: RegistryError(
        ErrorCode.RANGE_INVALID, e.message, headers={"Range": f"0-{max(e.size - 1, 0)}"}
    ),
    SizeExceeded: _plain(ErrorCode.TOO_LARGE),
    DigestMismatch: lambda e: RegistryError(ErrorCode.DIGEST_INVALID, e.message, detail=e.detail),
    StorageUnavailable: _retry(ErrorCode.UNAVAILABLE),
    MissingReference: lambda e: RegistryError(
        ErrorCode.MANIFEST_BLOB_UNKNOWN, e.message, detail={"digest": e.digest}
    ),
    MetadataUnavailable: _retry(ErrorCode.UNAVAILABLE),
    # The bases last: a backend error nobody gave a code is the server's fault.
    StorageError: _plain(ErrorCode.UNKNOWN),
    MetadataError: _plain(ErrorCode.UNKNOWN),
}


def as_registry_error(exc: RegistryError | BackendError) -> RegistryError:
    """The spec error a client sees for `exc` (the most specific entry of `BACKEND_CODES`)."""
    if isinstance(exc, RegistryError):
        return exc
    for cls in type(exc).__mro__:
        translate = BACKEND_CODES.get(cls)
        if translate is not None:
            return translate(exc)
    raise TypeError(f"{type(exc).__name__} is not a backend error")  # pragma: no cover


def error_response(exc: RegistryError, method: str = "GET") -> Response:
    headers = dict(exc.headers)
    if method == "HEAD":
        # HEAD responses carry no body; the status and headers are the answer.
        return Response(status_code=exc.status, headers=headers)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


async def registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return error_response(exc, request.method)


def _unavailable(request: Request, exc: StorageUnavailable | MetadataUnavailable) -> Response:
    backend = "object storage" if isinstance(exc, StorageUnavailable) else "metadata database"
    reason = exc.reason if isinstance(exc, MetadataUnavailable) else str(exc.__cause__ or exc)
    log.warning("backend_unavailable", backend=backend, error=reason[:300], path=request.url.path)
    return error_response(as_registry_error(exc), request.method)


async def backend_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StorageError | MetadataError)
    if isinstance(exc, StorageUnavailable | MetadataUnavailable):
        return _unavailable(request, exc)
    err = as_registry_error(exc)
    if err.status >= 500:
        log.error("backend_error", error=exc.message[:300], path=request.url.path)
    return error_response(err, request.method)


# -- the Notary group (notary.api.v1), for the trust routes -----------------------------------------
NOTARY_MESSAGES = {
    "NO_FILENAME": ("No file/role name provided.", 400),
    "INVALID_ROLE": ("The role you are attempting to operate on is invalid.", 400),
    "MALFORMED_JSON": ("JSON sent by the client could not be parsed by the server", 400),
    "UPDATING": ("An error has occurred while updating the TUF repository.", 500),
    "VERSION": ("A newer version of metadata is already available.", 400),
    "METADATA_NOT_FOUND": ("You have requested metadata that does not exist.", 404),
    "INVALID_UPDATE": ("Update sent by the client is invalid.", 400),
    "MALFORMED_UPLOAD": ("The body of your request is malformed.", 400),
    "GENERIC_NOT_FOUND": ("You have requested a resource that does not exist.", 404),
    "INVALID_GUN": ("The GUN you are attempting to operate on is invalid.", 400),
    "INVALID_PARAMETERS": ("The parameters you provided are invalid.", 400),
    "TOO_LARGE": ("The upload is larger than the server accepts.", 413),
    "UNKNOWN": ("unknown error", 500),
}


def notary_error(code: str, detail: Any = None, message: str | None = None) -> Response:
    """Notary's error shape: distribution's errcode JSON, status from `NOTARY_MESSAGES`."""
    default, status = NOTARY_MESSAGES.get(code, NOTARY_MESSAGES["UNKNOWN"])
    err: dict[str, Any] = {"code": code, "message": message or default}
    if detail is not None:
        err["detail"] = detail
    return JSONResponse({"errors": [err]}, status_code=status)


async def trust_refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequest)
    trust_log.info("trust_request_refused", code=exc.code, msg=exc.message[:300])
    # VERSION keeps Notary's own text: its clients match on it.
    return notary_error(exc.code, exc.detail, exc.message if exc.code != "VERSION" else None)


async def trust_update_rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationFailure)
    trust_log.info("trust_update_rejected", kind=exc.kind, msg=exc.msg[:300])
    return notary_error("INVALID_UPDATE", exc.to_detail())


async def trust_not_found(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFound)
    return notary_error("METADATA_NOT_FOUND")


# -- the rest ----------------------------------------------------------------------------------------
async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        err = RegistryError(
            ErrorCode.UNSUPPORTED, f"method {request.method} is not allowed on this endpoint"
        )
    elif exc.status_code == 404:
        err = RegistryError(
            ErrorCode.NAME_UNKNOWN, "no such endpoint; this is an OCI distribution (/v2/) registry"
        )
    else:
        err = RegistryError(ErrorCode.UNKNOWN, exc.detail)
    resp = error_response(err, request.method)
    resp.status_code = exc.status_code
    return resp


async def client_gone(request: Request, exc: Exception) -> Response:
    log.info("client_disconnected", method=request.method, path=request.url.path)
    return Response(status_code=400)


_OUTAGES = (StorageUnavailable, MetadataUnavailable, ConnectionError, TimeoutError)


def _outage_in_chain(exc: BaseException) -> BaseException | None:
    """A backend's *Unavailable (or a bare socket error) that `exc` is or was raised from."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, _OUTAGES):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


async def unexpected(request: Request, exc: Exception) -> Response:
    """Never a traceback to the client; the log has it. Also reached by what the middleware
    raises (outside the routes' handlers), so backend outages are recognised here too."""
    outage = _outage_in_chain(exc)
    if isinstance(outage, StorageUnavailable | MetadataUnavailable):
        return _unavailable(request, outage)
    if outage is not None:  # a socket error no backend converted: still not the client's fault
        log.warning("backend_unavailable", backend="unknown", error=str(outage)[:300])
        err = RegistryError(
            ErrorCode.UNAVAILABLE,
            "a backend service is unavailable; nothing was changed, retry shortly",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
        return error_response(err, request.method)
    log.exception("unhandled_error", method=request.method, path=request.url.path)
    err = RegistryError(ErrorCode.UNKNOWN, "internal server error; the registry log has details")
    return error_response(err, request.method)


Handler = Callable[[Request, Exception], Awaitable[Response]]

EXCEPTION_HANDLERS: dict[Any, Handler] = {
    RegistryError: registry_error,
    StorageError: backend_error,
    MetadataError: backend_error,
    InvalidRequest: trust_refused,
    ValidationFailure: trust_update_rejected,
    NotFound: trust_not_found,
    HTTPException: http_error,
    ClientDisconnect: client_gone,
    Exception: unexpected,
}
