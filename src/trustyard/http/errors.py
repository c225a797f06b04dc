"""The one place errors become HTTP responses, in the spec's JSON shape."""

from __future__ import annotations

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from trustyard.oci.errors import ErrorCode, RegistryError

log = structlog.get_logger("trustyard.http")


def error_response(exc: RegistryError, method: str = "GET") -> Response:
    headers = dict(exc.headers)
    if method == "HEAD":
        # HEAD responses carry no body; the status and headers are the answer.
        return Response(status_code=exc.status, headers=headers)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)


async def registry_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    return error_response(exc, request.method)


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


def _backend_unavailable(exc: BaseException) -> str | None:
    """Which shared backend failed, when `exc` is an outage rather than a bug (third-party
    errors are recognised here, at the edge, so the layers below stay free of them)."""
    from botocore.exceptions import BotoCoreError, ClientError
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, OperationalError | PoolTimeout) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return "metadata database"
    if isinstance(exc, ClientError):
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return "object storage" if status >= 500 or status == 0 else None
    if isinstance(exc, BotoCoreError):
        return "object storage"
    if isinstance(exc, ConnectionError | TimeoutError):
        return "a backend service"
    cause = exc.__cause__ or exc.__context__
    return _backend_unavailable(cause) if cause is not None and cause is not exc else None


async def unexpected(request: Request, exc: Exception) -> Response:
    """Never a traceback to the client; the log has it."""
    backend = _backend_unavailable(exc)
    if backend is not None:
        log.warning(
            "backend_unavailable", backend=backend, error=str(exc)[:300], path=request.url.path
        )
        err = RegistryError(
            ErrorCode.UNAVAILABLE,
            f"the {backend} is unavailable; nothing was changed, retry shortly",
            headers={"Retry-After": "5"},
        )
        return error_response(err, request.method)
    log.exception("unhandled_error", method=request.method, path=request.url.path)
    err = RegistryError(ErrorCode.UNKNOWN, "internal server error; the registry log has details")
    return error_response(err, request.method)


EXCEPTION_HANDLERS = {
    RegistryError: registry_error,
    HTTPException: http_error,
    ClientDisconnect: client_gone,
    Exception: unexpected,
}
