"""The one error table (http/errors.py): every backend error type and every Notary error to its
code, status, message and headers; outages answer 503 with Retry-After on any route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from trustyard.http.errors import EXCEPTION_HANDLERS, NOTARY_MESSAGES, as_registry_error
from trustyard.metadata.errors import MetadataUnavailable, MissingReference
from trustyard.oci.errors import ErrorCode
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

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
RETRY = {"Retry-After": "5"}

# (error, code, status, message, detail, headers): the answers the backends gave before they
# had their own types, which clients and tests already rely on.
TABLE: list[tuple[Exception, ErrorCode, int, str, Any, dict[str, str]]] = [
    (BlobNotFound(DIGEST), ErrorCode.BLOB_UNKNOWN, 404, f"blob {DIGEST} is not stored", None, {}),
    (UploadNotFound(), ErrorCode.BLOB_UPLOAD_UNKNOWN, 404, "upload not found", None, {}),
    (
        UploadNotFound("upload id is not one this registry issued"),
        ErrorCode.BLOB_UPLOAD_UNKNOWN,
        404,
        "upload id is not one this registry issued",
        None,
        {},
    ),
    (
        UploadBusy(),
        ErrorCode.RANGE_INVALID,
        416,
        "another request is writing to this upload; wait for it and retry",
        None,
        {},
    ),
    (
        OffsetMismatch(10, 3),
        ErrorCode.RANGE_INVALID,
        416,
        "chunk starts at byte 10 but the upload has 3 bytes",
        None,
        {"Range": "0-2"},
    ),
    (
        OffsetMismatch(5, 0),
        ErrorCode.RANGE_INVALID,
        416,
        "chunk starts at byte 5 but the upload has 0 bytes",
        None,
        {"Range": "0-0"},
    ),
    (
        SizeExceeded(150),
        ErrorCode.TOO_LARGE,
        413,
        "blob exceeds the size limit of 150 bytes",
        None,
        {},
    ),
    (
        DigestMismatch(DIGEST, OTHER),
        ErrorCode.DIGEST_INVALID,
        400,
        f"uploaded content has digest {OTHER}, not {DIGEST}",
        {"expected": DIGEST, "actual": OTHER},
        {},
    ),
    (
        StorageUnavailable(),
        ErrorCode.UNAVAILABLE,
        503,
        "the object storage is unavailable; nothing was changed, retry shortly",
        None,
        RETRY,
    ),
    (
        StorageUnavailable("object storage returned different bytes; retry"),
        ErrorCode.UNAVAILABLE,
        503,
        "object storage returned different bytes; retry",
        None,
        RETRY,
    ),
    (
        MissingReference("team/app", DIGEST, "blob"),
        ErrorCode.MANIFEST_BLOB_UNKNOWN,
        400,
        f"manifest references blob {DIGEST}, which is not in repository team/app; "
        "push the blob first",
        {"digest": DIGEST},
        {},
    ),
    (
        MissingReference("team/app", DIGEST, "manifest"),
        ErrorCode.MANIFEST_BLOB_UNKNOWN,
        400,
        f"index references manifest {DIGEST}, which is not in repository team/app; "
        "push the child manifests first",
        {"digest": DIGEST},
        {},
    ),
    (
        MetadataUnavailable("sqlite: disk I/O error"),
        ErrorCode.UNAVAILABLE,
        503,
        "the metadata database is unavailable; nothing was changed, retry shortly",
        None,
        RETRY,
    ),
    (StorageError("new"), ErrorCode.UNKNOWN, 500, "new", None, {}),
]


@pytest.mark.parametrize(
    ("exc", "code", "status", "message", "detail", "headers"),
    TABLE,
    ids=[type(row[0]).__name__ for row in TABLE],
)
def test_each_backend_error_has_one_spec_answer(
    exc: StorageError, code: ErrorCode, status: int, message: str, detail: Any, headers: Any
) -> None:
    err = as_registry_error(exc)
    assert (err.code, err.status, err.message, err.detail, err.headers) == (
        code,
        status,
        message,
        detail,
        headers,
    )


def _app(raise_it: BaseException) -> Starlette:
    async def endpoint(request: Request) -> None:
        raise raise_it

    return Starlette(
        routes=[Route("/boom", endpoint, methods=["GET", "POST"])],
        exception_handlers=EXCEPTION_HANDLERS,
    )


async def _call(exc: BaseException, method: str = "GET") -> httpx.Response:
    transport = httpx.ASGITransport(app=_app(exc), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.request(method, "/boom")


@pytest.mark.parametrize("exc", [row[0] for row in TABLE], ids=[type(r[0]).__name__ for r in TABLE])
async def test_the_app_renders_backend_errors_through_the_table(exc: Exception) -> None:
    err = as_registry_error(exc)  # type: ignore[arg-type]
    resp = await _call(exc)
    assert resp.status_code == err.status
    assert resp.json() == err.to_json()
    for name, value in err.headers.items():
        assert resp.headers[name] == value
    head = await _call(exc, "HEAD")
    assert (head.status_code, head.content) == (err.status, b"")


@pytest.mark.parametrize(
    ("exc", "status", "body"),
    [
        (
            InvalidRequest("INVALID_GUN", "'x' is not a valid collection name"),
            400,
            {"code": "INVALID_GUN", "message": "'x' is not a valid collection name"},
        ),
        (
            InvalidRequest("INVALID_ROLE", "'bad' is not a role", detail="bad"),
            400,
            {"code": "INVALID_ROLE", "message": "'bad' is not a role", "detail": "bad"},
        ),
        (  # VERSION keeps Notary's own message, which its client matches on
            InvalidRequest("VERSION", "targets version 3 is not newer than 4"),
            400,
            {"code": "VERSION", "message": NOTARY_MESSAGES["VERSION"][0]},
        ),
        (
            InvalidRequest("TOO_LARGE", "upload is larger than the limit of 10 bytes"),
            413,
            {"code": "TOO_LARGE", "message": "upload is larger than the limit of 10 bytes"},
        ),
        (
            ValidationFailure("ErrBadHierarchy", "no snapshot", missing="snapshot"),
            400,
            {
                "code": "INVALID_UPDATE",
                "message": NOTARY_MESSAGES["INVALID_UPDATE"][0],
                "detail": {
                    "Name": "ErrBadHierarchy",
                    "Error": {"Missing": "snapshot", "Msg": "no snapshot"},
                },
            },
        ),
        (
            NotFound("root.json"),
            404,
            {"code": "METADATA_NOT_FOUND", "message": NOTARY_MESSAGES["METADATA_NOT_FOUND"][0]},
        ),
    ],
)
async def test_notary_errors_keep_notarys_shape(
    exc: Exception, status: int, body: dict[str, Any]
) -> None:
    resp = await _call(exc, "POST")
    assert resp.status_code == status
    assert resp.json() == {"errors": [body]}


def _wrapped(inner: BaseException) -> RuntimeError:
    """`inner` as the cause of an error some layer raised while handling it."""
    try:
        try:
            raise inner
        except BaseException as exc:
            raise RuntimeError("while answering") from exc
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (
            _wrapped(MetadataUnavailable("gone")),
            "the metadata database is unavailable; nothing was changed, retry shortly",
        ),
        (
            _wrapped(StorageUnavailable()),
            "the object storage is unavailable; nothing was changed, retry shortly",
        ),
        (
            ConnectionRefusedError(111, "Connection refused"),
            "a backend service is unavailable; nothing was changed, retry shortly",
        ),
        (TimeoutError(), "a backend service is unavailable; nothing was changed, retry shortly"),
    ],
)
async def test_an_outage_anywhere_in_the_chain_is_503(exc: Exception, message: str) -> None:
    resp = await _call(exc)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"] == "5"
    assert resp.json() == {"errors": [{"code": "UNAVAILABLE", "message": message}]}


async def test_anything_else_is_a_500_without_a_traceback() -> None:
    resp = await _call(ValueError("secret internals"))
    assert resp.status_code == 500
    assert resp.json() == {
        "errors": [
            {"code": "UNKNOWN", "message": "internal server error; the registry log has details"}
        ]
    }
