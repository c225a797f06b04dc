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


async def unexpected(request: Request, exc: Exception) -> Response:
    """Never a traceback to the client; the log has it."""
    log.exception("unhandled_error", method=request.method, path=request.url.path)
    err = RegistryError(ErrorCode.UNKNOWN, "internal server error; the registry log has details")
    return error_response(err, request.method)


EXCEPTION_HANDLERS = {
    RegistryError: registry_error,
    HTTPException: http_error,
    ClientDisconnect: client_gone,
    Exception: unexpected,
}
