"""The namespace authority's statements, served for clients to fetch and verify offline.

- `GET /extensions/v2/_authority/statements?n=&last=`: `{"statements": ["<jws>", …]}` in issue
  order, a `Link: <…?n=&last=<id>>; rel="next"` header while more follow (as `tags/list`),
  `ETag` over the page and `Cache-Control: no-cache` (revalidate: a revocation may be new).
- `GET /extensions/v2/_authority/statements/<id>`: one statement (`application/jose`), which
  never changes: `Cache-Control: public, max-age=31536000, immutable`.
- `POST /extensions/v2/_authority/statements` (body: one compact JWS): 201 with `Location`,
  200 when the same bytes are already stored. Needs the registry's admin right
  (`registry:catalog:*`); reading needs any valid identity.
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trustyard.auth.scopes import CATALOG_RIGHTS, IDENTITY, GuardedRoute
from trustyard.http.params import single_values
from trustyard.http.responses import next_link
from trustyard.http.v2 import read_limited
from trustyard.registry.authority import MAX_REQUEST_BYTES, AuthorityStatements

PATH = "/extensions/v2/_authority/statements"
JOSE = "application/jose"


def _use_case(request: Request) -> AuthorityStatements:
    use_case: AuthorityStatements = request.app.state.authority
    return use_case


def _matches(request: Request, etag: str) -> bool:
    match = request.headers.get("if-none-match")
    return match is not None and etag in [m.strip() for m in match.split(",")]


async def statements_list(request: Request) -> Response:
    params = single_values(request.scope, ("n", "last"))
    page = await _use_case(request).page(params["n"], params["last"])
    digest = hashlib.sha256()
    for item in page.items:
        digest.update(item.content + b"\n")
    etag = f'"{digest.hexdigest()}-{page.next_last or ""}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if page.next_last is not None:
        n = params["n"]
        headers["Link"] = next_link(PATH, int(n) if n else None, page.next_last)
    if _matches(request, etag):
        return Response(status_code=304, headers=headers)
    body = {"statements": [item.content.decode() for item in page.items]}
    return JSONResponse(body, headers=headers)


async def statement_get(request: Request) -> Response:
    found = await _use_case(request).get(request.path_params["id"])
    etag = f'"{hashlib.sha256(found.content).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=31536000, immutable"}
    if _matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(found.content, media_type=JOSE, headers=headers)


async def statement_post(request: Request) -> Response:
    body = await read_limited(request, MAX_REQUEST_BYTES, "authority statement")
    record, created = await _use_case(request).submit(body)
    return JSONResponse(
        {"id": record.id, "type": record.type, "key": record.key_id},
        status_code=201 if created else 200,
        headers={"Location": f"{PATH}/{record.id}"},
    )


def routes() -> list[GuardedRoute]:
    return [
        GuardedRoute(PATH, statements_list, methods=["GET"], rights=IDENTITY),
        GuardedRoute(PATH, statement_post, methods=["POST"], rights=CATALOG_RIGHTS),
        GuardedRoute(PATH + "/{id}", statement_get, methods=["GET"], rights=IDENTITY),
    ]
