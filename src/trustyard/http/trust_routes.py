"""Notary v1 server API routes (`/v2/{gun}/_trust/…`): parse, call `TrustService`, render.

Failures are raised as the trust server's typed exceptions (`InvalidRequest`, `NotFound`,
`ValidationFailure`); `http/errors.py` renders them in Notary's shape (distribution errcode,
group notary.api.v1), and a backend outage as the same 503 the registry routes answer.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trustyard.auth.keyring import TokenRejected
from trustyard.auth.scopes import CATALOG_RIGHTS, GuardedRoute, on_repository
from trustyard.crypto.notary_keys import key_response
from trustyard.http.bodies import BodyTooLarge, read_bounded
from trustyard.http.event_hooks import event_rows
from trustyard.http.telemetry import trust_publish
from trustyard.http.token_routes import parse_basic
from trustyard.oci import jsonbounds
from trustyard.trust import model as m
from trustyard.trust.server.service import InvalidRequest, NotFound, TrustService
from trustyard.trust.server.validation import ValidationFailure

CURRENT_CACHE = "public, max-age=300, s-maxage=300, must-revalidate"
CONSISTENT_CACHE = "public, max-age=2592000, s-maxage=2592000"

_GUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]*(/[A-Za-z0-9][A-Za-z0-9._:\-]*)*$")
_ROLE = r"root|targets(?:/[^/\s]+)*|snapshot|timestamp"
_BY_HASH = re.compile(
    rf"^({_ROLE})\.([a-fA-F0-9]{{64}}|[a-fA-F0-9]{{96}}|[a-fA-F0-9]{{128}})\.json$"
)
_BY_VERSION = re.compile(rf"^(\d{{1,9}})\.({_ROLE})\.json$")
_CURRENT = re.compile(rf"^({_ROLE})\.json$")
_KEY = re.compile(r"^(timestamp|snapshot)\.key$")


def _service(request: Request) -> TrustService:
    service: TrustService = request.app.state.trust
    return service


def _actor(request: Request) -> str:
    """The audit rows' actor: the subject the access middleware verified for this request (the
    Basic user in htpasswd mode, the token's `sub` in token mode; the verifier answers from its
    cache), else `anonymous`."""
    runtime = getattr(request.app.state, "auth", None)
    header = request.headers.get("authorization", "")
    mode = getattr(getattr(runtime, "settings", None), "mode", "none")
    if runtime is None or not header or mode == "none":
        return "anonymous"
    if mode == "htpasswd":
        creds = parse_basic(header)
        return creds[0] if creds and creds[0] else "anonymous"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or runtime.verifier is None:
        return "anonymous"
    try:
        return runtime.verifier.verify(token.strip()).subject or "anonymous"
    except TokenRejected:
        return "anonymous"


def _gun(request: Request) -> str:
    gun = str(request.path_params.get("gun", ""))
    if len(gun) > 255 or not _GUN.match(gun) or ".." in gun:
        raise InvalidRequest("INVALID_GUN", f"{gun[:80]!r} is not a valid collection name")
    return gun


def _last_modified(created_at: float) -> str:
    return email.utils.formatdate(created_at, usegmt=True)


async def tuf_get(request: Request) -> Response:
    gun = _gun(request)
    name = str(request.path_params["file"])
    service = _service(request)
    sha = version = None
    if match := _BY_HASH.match(name):
        role, sha = match.group(1), match.group(2).lower()
        cache = CONSISTENT_CACHE
    elif match := _BY_VERSION.match(name):
        version, role = int(match.group(1)), match.group(2)
        cache = CONSISTENT_CACHE
    elif match := _CURRENT.match(name):
        role, cache = match.group(1), CURRENT_CACHE
    else:
        raise NotFound(name)
    if not m.valid_role(role) or (sha is not None and len(sha) != 64):
        raise NotFound(name)  # we address files by sha256 only
    found = await service.get_metadata(gun, role, sha256=sha, version=version)
    return Response(
        found.data,
        media_type="application/json",
        headers={"Cache-Control": cache, "Last-Modified": _last_modified(found.created_at)},
    )


async def tuf_post(request: Request) -> Response:
    gun = _gun(request)
    name = str(request.path_params["file"])
    service = _service(request)
    if name != "":
        raise NotFound(name)
    limit: int = request.app.state.trust_max_upload_bytes
    body = await _read_limited(request, limit)
    updates = parse_multipart(request.headers.get("content-type", ""), body)
    events = event_rows(request, lambda events: events.trust_published(gun, sorted(updates)))
    counted = getattr(request.app.state, "metrics", False)
    try:
        await service.publish(gun, updates, _actor(request), events)
    except (InvalidRequest, ValidationFailure):
        if counted:
            trust_publish("refused")
        raise
    except Exception:
        if counted:
            trust_publish("failed")
        raise
    if counted:
        trust_publish("success")
    return Response(b"", status_code=200)


async def tuf_delete(request: Request) -> Response:
    gun = _gun(request)
    if request.path_params["file"] != "":
        raise NotFound(str(request.path_params["file"]))
    await _service(request).delete(gun, _actor(request))
    return Response(b"", status_code=200)


def _key_role(request: Request) -> str:
    role = str(request.path_params["role"])
    if _KEY.match(f"{role}.key") is None:
        raise NotFound(f"{role}.key")
    return role


async def key_get(request: Request) -> Response:
    """Notary's GetOrCreate key: needs push and pull (a read may create the one key a first
    publish needs, so a reader must be a writer)."""
    gun = _gun(request)
    key = await _service(request).get_key(gun, _key_role(request), _actor(request))
    return Response(key_response(key), media_type="application/json")


async def key_rotate(request: Request) -> Response:
    """A new server key: needs `*` on the GUN, as in notary-server."""
    gun = _gun(request)
    key = await _service(request).rotate_key(gun, _key_role(request), _actor(request))
    return Response(key_response(key), media_type="application/json")


_FEED_PARAMS = ("change_id", "records", "page_size", "reversed", "filter")


def _feed_params(request: Request) -> dict[str, str]:
    """The changefeed's parameters, each at most once (a repeated one is refused, not guessed)."""
    out: dict[str, str] = {}
    for name in _FEED_PARAMS:
        values = request.query_params.getlist(name)
        if len(values) > 1:
            raise InvalidRequest(
                "INVALID_PARAMETERS", f"parameter {name} is given {len(values)} times; give it once"
            )
        out[name] = values[0] if values else ""
    return out


def _int_param(params: dict[str, str], name: str) -> int | None:
    raw = params[name]
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(
            "INVALID_PARAMETERS", f"invalid {name} parameter, must be an integer"
        ) from None


async def changefeed(request: Request) -> Response:
    """`?change_id=&records=` (negative: newest first) or `?page_size=&reversed=`."""
    params = _feed_params(request)
    gun = _gun(request) if "gun" in request.path_params else params["filter"]
    change_id = _int_param(params, "change_id")
    records = _int_param(params, "records")
    if records is None:
        records = _int_param(params, "page_size")
    reverse = params["reversed"].lower() in ("1", "true")
    if (records is not None and records < 0) or (change_id is not None and change_id < 0):
        reverse = True
    count = min(abs(records or 0) or 100, 1000)
    changes = await _service(request).changes(
        gun or None, change_id if change_id and change_id > 0 else None, count, reverse
    )
    out = [
        {
            "ID": str(c.id),
            "CreatedAt": _rfc3339(c.created_at),
            "GUN": c.gun,
            "Version": c.version,
            "SHA256": c.sha256,
            "Category": c.category,
        }
        for c in changes
    ]
    return JSONResponse({"count": len(out), "records": out})


def _rfc3339(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat().replace("+00:00", "Z")


async def _read_limited(request: Request, limit: int) -> bytes:
    try:
        return await read_bounded(request, limit, "upload")
    except BodyTooLarge as exc:  # drained, so the client reads this answer (http/bodies.py)
        raise InvalidRequest("TOO_LARGE", exc.message) from None


_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z*]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))')


def parse_multipart(content_type: str, body: bytes) -> dict[str, bytes]:
    """role → exact bytes of each `multipart/form-data` part (filename names the role)."""
    mtype, _, params = content_type.partition(";")
    boundary = None
    for key, quoted, bare in _DISPOSITION_PARAM.findall(";" + params):
        if key.lower() == "boundary":
            boundary = quoted or bare
    if mtype.strip().lower() != "multipart/form-data" or not boundary:
        raise InvalidRequest("MALFORMED_UPLOAD", "expected multipart/form-data with a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    # Go's multipart writer with no parts writes only the closing delimiter: the notary client
    # sends that for a publish with nothing staged (the server then re-signs what it manages).
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise InvalidRequest("MALFORMED_UPLOAD", "multipart body is not terminated")
    updates: dict[str, bytes] = {}
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise InvalidRequest("MALFORMED_UPLOAD", "multipart part framing is broken")
        head, sep, content = chunk[2:-2].partition(b"\r\n\r\n")
        if not sep:
            raise InvalidRequest("MALFORMED_UPLOAD", "multipart part has no header end")
        filename = None
        for line in head.split(b"\r\n"):
            hname, _, hvalue = line.decode("latin-1").partition(":")
            if hname.strip().lower() == "content-disposition":
                for key, quoted, bare in _DISPOSITION_PARAM.findall(hvalue):
                    if key.lower() == "filename":
                        filename = quoted.replace('\\"', '"') if quoted else bare
        role = (filename or "").removesuffix(".json")
        if not role:
            raise InvalidRequest("NO_FILENAME", "a part has no filename naming its role")
        if not m.valid_role(role) or role == m.TIMESTAMP:
            raise InvalidRequest("INVALID_ROLE", f"{role[:80]!r} is not a role", detail=role[:80])
        try:
            jsonbounds.loads(content, what=role)
        except jsonbounds.JSONBoundsError as exc:
            raise InvalidRequest("MALFORMED_JSON", str(exc)) from None
        if role in updates:
            raise InvalidRequest("MALFORMED_UPLOAD", f"{role} appears twice")
        updates[role] = content
    return updates


def routes() -> list[GuardedRoute]:
    """Mount before the registry routes: `{gun}` contains `/`, so these route on `_trust`.

    Rights as notary-server's: the global changefeed needs the catalog, a GUN's feed and its
    metadata pull, publishing and reading a server key pull and push, rotating a key and
    deleting a GUN `*`. The key routes come before the `{file:path}` ones.
    """
    tuf = "/v2/{gun:path}/_trust/tuf/{file:path}"
    key = "/v2/{gun:path}/_trust/tuf/{role}.key"
    pull = on_repository("pull", param="gun")
    push = on_repository("pull", "push", param="gun")
    admin = on_repository("*", param="gun")
    return [
        GuardedRoute("/v2/_trust/changefeed", changefeed, methods=["GET"], rights=CATALOG_RIGHTS),
        GuardedRoute("/v2/{gun:path}/_trust/changefeed", changefeed, methods=["GET"], rights=pull),
        GuardedRoute(key, key_get, methods=["GET"], rights=push),
        GuardedRoute(key, key_rotate, methods=["POST"], rights=admin),
        GuardedRoute(tuf, tuf_get, methods=["GET"], rights=pull),
        GuardedRoute(tuf, tuf_post, methods=["POST"], rights=push),
        GuardedRoute(tuf, tuf_delete, methods=["DELETE"], rights=admin),
    ]
