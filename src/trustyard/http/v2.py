"""Registry routes (`/v2/…`): parse the request, call the use case, render the result."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from trustyard.auth.scopes import CATALOG_RIGHTS, IDENTITY, GuardedRoute, on_repository
from trustyard.http.bodies import BodyTooLarge, TrackedBody, drain, read_bounded
from trustyard.http.errors import as_registry_error
from trustyard.http.params import (
    APPROVED_UPLOAD,
    MAX_MOUNT_SOURCES,
    UploadStart,
    parse_upload_start,
    single_values,
)
from trustyard.http.responses import blob_response, digest_headers, next_link, not_modified
from trustyard.metadata.audit_base import ANONYMOUS, current_request
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.referrers import referrers_index
from trustyard.registry import Registry
from trustyard.registry.mirror import CACHE_HEADER, MISS, Mirrors
from trustyard.registry.mirror_fill import Tee
from trustyard.storage.errors import StorageError


def _registry(request: Request) -> Registry:
    registry: Registry = request.app.state.registry
    return registry


def _actor() -> str:
    """Who the tag history names for an API change: the subject the access check verified (the
    Basic user, the token's `sub`), else `anonymous` (auth mode none sets no context)."""
    context = current_request.get()
    return context.actor if context is not None else ANONYMOUS


def _mirrors(request: Request, name: str) -> Mirrors | None:
    """The mirrors, when `name` is under a mirrored prefix (a prefix check; else None)."""
    mirrors: Mirrors | None = getattr(request.app.state, "mirrors", None)
    return mirrors if mirrors is not None and mirrors.match(name) is not None else None


def _refuse_mirrored(request: Request, name: str) -> None:
    mirrors = _mirrors(request, name)
    if mirrors is not None:
        mirrors.refuse_push(name)


def _upload_location(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def _progress_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": _upload_location(name, upload_id),
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


def _created(name: str, digest: Digest) -> Response:
    return Response(
        status_code=201,
        headers={
            "Location": f"/v2/{name}/blobs/{digest}",
            "Docker-Content-Digest": str(digest),
            "Content-Length": "0",
        },
    )


async def read_limited(request: Request, limit: int, what: str) -> bytes:
    """Read a small body (manifests) with a hard limit: 413 without buffering more than it."""
    try:
        return await read_bounded(request, limit, what)
    except BodyTooLarge as exc:
        headers = {"Connection": "close"} if exc.close else {}
        raise RegistryError(ErrorCode.TOO_LARGE, exc.message, headers=headers) from None


# -- base and listings -----------------------------------------------------------------------
# containers/image stores and reads simple signatures through /extensions/v2/… when the
# registry advertises it here (http/extensions.py); no lookaside configuration is needed.
SIGNATURES_HEADER = {"X-Registry-Supports-Signatures": "1"}


async def base(request: Request) -> Response:
    return JSONResponse({}, headers=SIGNATURES_HEADER)


async def catalog(request: Request) -> Response:
    params = single_values(request.scope, ("n", "last"))
    n = params["n"]
    page = await _registry(request).catalog(n, params["last"])
    headers = {}
    if page.next_last is not None:
        headers["Link"] = next_link("/v2/_catalog", int(n) if n else None, page.next_last)
    return JSONResponse({"repositories": page.items}, headers=headers)


async def tags_list(request: Request) -> Response:
    name = request.path_params["name"]
    params = single_values(request.scope, ("n", "last"))
    n = params["n"]
    page = await _registry(request).tags(name, n, params["last"])
    headers = {}
    if page.next_last is not None:
        headers["Link"] = next_link(f"/v2/{name}/tags/list", int(n) if n else None, page.next_last)
    return JSONResponse({"name": name, "tags": page.items}, headers=headers)


# -- manifests -------------------------------------------------------------------------------
def _accept(request: Request) -> list[str]:
    values: list[str] = []
    for header in request.headers.getlist("accept"):
        values.extend(part.split(";", 1)[0].strip() for part in header.split(","))
    return [v for v in values if v]


async def manifest_get(request: Request) -> Response:
    name, reference = request.path_params["name"], request.path_params["reference"]
    mirrors = _mirrors(request, name)
    cache_state = None
    if mirrors is not None:
        record, cache_state = await mirrors.get_manifest(
            name, reference, _accept(request), pull=request.method == "GET"
        )
    else:
        record = await _registry(request).get_manifest(
            name, reference, _accept(request), pull=request.method == "GET"
        )
    headers = digest_headers(record.digest, record.size, record.media_type)
    if cache_state is not None:
        headers[CACHE_HEADER] = cache_state
    if record.subject is not None:
        headers["OCI-Subject"] = str(record.subject)
    if not_modified(request, record.digest):
        return Response(
            status_code=304,
            headers={
                "Docker-Content-Digest": str(record.digest),
                "ETag": headers["ETag"],
                **({CACHE_HEADER: cache_state} if cache_state else {}),
            },
        )
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers)
    return Response(record.content, status_code=200, headers=headers)


async def manifest_put(request: Request) -> Response:
    name, reference = request.path_params["name"], request.path_params["reference"]
    _refuse_mirrored(request, name)
    registry = _registry(request)
    body = await read_limited(request, registry.options.max_manifest_bytes, "manifest")
    manifest = await registry.put_manifest(
        name,
        reference,
        request.headers.get("content-type"),
        body,
        request.query_params.getlist("tag"),
        actor=_actor(),
    )
    headers = {
        "Location": f"/v2/{name}/manifests/{manifest.digest}",
        "Docker-Content-Digest": str(manifest.digest),
        "Content-Length": "0",
    }
    if manifest.subject is not None:
        headers["OCI-Subject"] = str(manifest.subject)
    response = Response(status_code=201, headers=headers)
    for tag in request.query_params.getlist("tag"):
        response.headers.append("OCI-Tag", tag)
    return response


async def manifest_delete(request: Request) -> Response:
    _refuse_mirrored(request, request.path_params["name"])
    await _registry(request).delete_manifest(
        request.path_params["name"], request.path_params["reference"], actor=_actor()
    )
    return Response(status_code=202, headers={"Content-Length": "0"})


# -- blobs -----------------------------------------------------------------------------------
async def blob_get(request: Request) -> Response:
    name = request.path_params["name"]
    digest = Digest.parse(request.path_params["digest"])
    registry = _registry(request)
    mirrors = _mirrors(request, name)
    cache_state = None
    if mirrors is not None and request.method == "GET":
        streamed = await mirrors.open_blob(name, digest)
        if not isinstance(streamed, str):
            return _streamed_fill(digest, *streamed)
        cache_state = streamed
    elif mirrors is not None:
        cache_state = await mirrors.ensure_blob(name, digest)
    if request.method == "HEAD":
        size = await registry.blob_size(name, digest)
        headers = digest_headers(digest, size, "application/octet-stream")
        headers["Accept-Ranges"] = "bytes"
        if cache_state is not None:
            headers[CACHE_HEADER] = cache_state
        return Response(status_code=200, headers=headers)
    location = await registry.locate_blob(name, digest)
    response = blob_response(request, digest, location, registry.storage)
    if cache_state is not None:
        response.headers[CACHE_HEADER] = cache_state
    return response


def _streamed_fill(digest: Digest, size: int | None, tee: Tee) -> Response:
    """A mirrored blob streamed to the client while it is being stored (`registry/mirror_fill`)."""
    headers = {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        CACHE_HEADER: MISS,
    }
    if size is not None:
        headers["Content-Length"] = str(size)
    return _FillResponse(tee, headers)


class _FillResponse(StreamingResponse):
    """Lets go of the fill the moment the response ends, however it ends.

    A client that hangs up while the response waits in `send` leaves the body generator
    suspended, not closed (closed only when the garbage collector gets to it); the fill would
    then stall on the full queue for `STALL_SECONDS`, and every other request for that blob
    with it."""

    def __init__(self, tee: Tee, headers: dict[str, str]) -> None:
        super().__init__(tee.body(), headers=headers)
        self._tee = tee

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._tee.detach()


async def blob_delete(request: Request) -> Response:
    _refuse_mirrored(request, request.path_params["name"])
    digest = Digest.parse(request.path_params["digest"])
    await _registry(request).delete_blob(request.path_params["name"], digest)
    return Response(status_code=202, headers={"Content-Length": "0"})


# -- uploads ---------------------------------------------------------------------------------
def _approved_upload(request: Request) -> UploadStart:
    """What the access check approved; without its approval, no mount is attempted."""
    approved = request.scope.get(APPROVED_UPLOAD)
    if isinstance(approved, UploadStart):
        return approved
    return parse_upload_start(request.scope)


async def _mount_sources(registry: Registry, mount: str, params: UploadStart) -> list[str | None]:
    """Where to mount from: `from` (None: from any repository when no `from` was given), or
    the approved repositories that hold the blob (looked up by reads, so a token naming many
    repositories costs one write, not one per repository)."""
    if params.sources is None:
        return [params.source]
    sources = params.sources[:MAX_MOUNT_SOURCES]
    if len(sources) <= 1:
        return list(sources)
    try:
        digest = Digest.parse(mount)
    except RegistryError:
        return []
    for source in sources:
        if await registry.metadata.blob_size(source, digest) is not None:
            return [source]
    return []


async def _refused_after_drain(
    body: TrackedBody, exc: RegistryError | StorageError
) -> RegistryError | StorageError:
    """A 4xx raised while the client may still be sending a blob: drop the rest of its body
    (up to the bound) first, so it reads our answer instead of a broken pipe. A 5xx goes on
    to the app's handlers as it is."""
    err = as_registry_error(exc)
    if err.status >= 500:
        return exc
    if not await drain(body):
        err.headers = {**err.headers, "Connection": "close"}
    return err


async def upload_start(request: Request) -> Response:
    name = request.path_params["name"]
    _refuse_mirrored(request, name)
    registry = _registry(request)
    uploads = registry.uploads
    params = _approved_upload(request)
    if params.mount:
        for source in await _mount_sources(registry, params.mount, params):
            mounted = await uploads.mount(name, params.mount, source)
            if mounted is not None:
                return _created(name, mounted[0])
    digest = params.digest
    if digest:
        body = TrackedBody(request)
        try:
            digest_obj, _ = await uploads.monolithic(
                name, digest, body, request.headers.get("content-length")
            )
        except (RegistryError, StorageError) as exc:
            raise await _refused_after_drain(body, exc) from exc.__cause__
        return _created(name, digest_obj)
    upload_id = await uploads.start(name)
    return Response(status_code=202, headers=_progress_headers(name, upload_id, 0))


async def upload_status(request: Request) -> Response:
    name, upload_id = request.path_params["name"], request.path_params["upload_id"]
    size = await _registry(request).uploads.status(name, upload_id)
    return Response(status_code=204, headers=_progress_headers(name, upload_id, size))


async def upload_patch(request: Request) -> Response:
    name, upload_id = request.path_params["name"], request.path_params["upload_id"]
    _refuse_mirrored(request, name)
    body = TrackedBody(request)
    try:
        size = await _registry(request).uploads.append(
            name,
            upload_id,
            body,
            request.headers.get("content-range"),
            request.headers.get("content-length"),
        )
    except (RegistryError, StorageError) as exc:
        raise await _refused_after_drain(body, exc) from exc.__cause__
    return Response(status_code=202, headers=_progress_headers(name, upload_id, size))


async def upload_put(request: Request) -> Response:
    name, upload_id = request.path_params["name"], request.path_params["upload_id"]
    _refuse_mirrored(request, name)
    body = TrackedBody(request)
    try:
        digest, _ = await _registry(request).uploads.finish(
            name,
            upload_id,
            single_values(request.scope, ("digest",))["digest"],
            body,
            request.headers.get("content-range"),
            request.headers.get("content-length"),
        )
    except (RegistryError, StorageError) as exc:
        raise await _refused_after_drain(body, exc) from exc.__cause__
    return _created(name, digest)


async def upload_delete(request: Request) -> Response:
    await _registry(request).uploads.cancel(
        request.path_params["name"], request.path_params["upload_id"]
    )
    return Response(status_code=204)


# -- referrers -------------------------------------------------------------------------------
async def referrers(request: Request) -> Response:
    name = request.path_params["name"]
    digest = Digest.parse(request.path_params["digest"])
    artifact_type = single_values(request.scope, ("artifactType",))["artifactType"] or None
    result = await _registry(request).referrers(name, digest, artifact_type)
    headers = {"Content-Type": mt.OCI_INDEX}
    if result.filtered:
        headers["OCI-Filters-Applied"] = "artifactType"
    return Response(referrers_index(result.descriptors), headers=headers)


def routes() -> list[GuardedRoute]:
    """Order matters: the `{name:path}` prefix is greedy, so specific suffixes come first.

    Each route names the rights it needs; the access check (http.access) reads them from here.
    """
    n = "/v2/{name:path}"
    pull, push, delete = (
        on_repository("pull"),
        on_repository("pull", "push"),
        on_repository("delete"),
    )
    mount = on_repository("pull", "push", mounts=True)
    return [
        GuardedRoute("/v2/", base, methods=["GET"], rights=IDENTITY),
        GuardedRoute("/v2/_catalog", catalog, methods=["GET"], rights=CATALOG_RIGHTS),
        GuardedRoute(f"{n}/tags/list", tags_list, methods=["GET"], rights=pull),
        GuardedRoute(
            f"{n}/manifests/{{reference}}", manifest_get, methods=["GET", "HEAD"], rights=pull
        ),
        GuardedRoute(f"{n}/manifests/{{reference}}", manifest_put, methods=["PUT"], rights=push),
        GuardedRoute(
            f"{n}/manifests/{{reference}}", manifest_delete, methods=["DELETE"], rights=delete
        ),
        GuardedRoute(f"{n}/blobs/uploads/", upload_start, methods=["POST"], rights=mount),
        GuardedRoute(f"{n}/blobs/uploads", upload_start, methods=["POST"], rights=mount),
        GuardedRoute(
            f"{n}/blobs/uploads/{{upload_id}}", upload_status, methods=["GET"], rights=push
        ),
        GuardedRoute(
            f"{n}/blobs/uploads/{{upload_id}}", upload_patch, methods=["PATCH"], rights=push
        ),
        GuardedRoute(f"{n}/blobs/uploads/{{upload_id}}", upload_put, methods=["PUT"], rights=push),
        GuardedRoute(
            f"{n}/blobs/uploads/{{upload_id}}", upload_delete, methods=["DELETE"], rights=push
        ),
        GuardedRoute(f"{n}/blobs/{{digest}}", blob_get, methods=["GET", "HEAD"], rights=pull),
        GuardedRoute(f"{n}/blobs/{{digest}}", blob_delete, methods=["DELETE"], rights=delete),
        GuardedRoute(f"{n}/referrers/{{digest}}", referrers, methods=["GET"], rights=pull),
    ]
