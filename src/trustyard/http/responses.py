"""Response helpers: streamed blob bodies (sendfile via ASGI pathsend), headers, pagination."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.storage.base import BlobLocation, BlobStore


def _etag(digest: Digest) -> str:
    return f'"{digest}"'


def not_modified(request: Request, digest: Digest) -> bool:
    match = request.headers.get("if-none-match")
    return match is not None and _etag(digest) in [m.strip() for m in match.split(",")]


def digest_headers(digest: Digest, size: int, content_type: str) -> dict[str, str]:
    return {
        "Docker-Content-Digest": str(digest),
        "ETag": _etag(digest),
        "Content-Type": content_type,
        "Content-Length": str(size),
    }


def blob_response(
    request: Request, digest: Digest, location: BlobLocation, store: BlobStore
) -> Response:
    """GET of a blob: zero-copy file, byte ranges (206), or a redirect for object stores."""
    headers = digest_headers(digest, location.size, "application/octet-stream")
    headers["Accept-Ranges"] = "bytes"
    headers["Cache-Control"] = "max-age=31536000"
    if not_modified(request, digest):
        return Response(
            status_code=304, headers={k: v for k, v in headers.items() if k != "Content-Length"}
        )
    if location.url is not None:
        return Response(
            status_code=307,
            headers={"Location": location.url, "Docker-Content-Digest": str(digest)},
        )
    if location.path is not None:
        del headers["Content-Length"]  # FileResponse sets it per range
        return FileResponse(location.path, headers=headers, media_type="application/octet-stream")
    if request.headers.get("range"):
        raise RegistryError(
            ErrorCode.UNSUPPORTED, "range requests are not supported by this storage backend"
        )
    return StreamingResponse(store.read(digest), headers=headers)


def next_link(path: str, n: int | None, last: str) -> str:
    query = {"last": last} if n is None else {"n": str(n), "last": last}
    return f'<{path}?{urlencode(query)}>; rel="next"'
