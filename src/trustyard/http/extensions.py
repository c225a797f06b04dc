"""The containers "signatures" extension API, as OpenShift's registry offers it.

`GET /extensions/v2/<name>/signatures/<digest>` lists a manifest's simple signatures;
`PUT` adds one (`{"schemaVersion": 2, "type": "atomic", "name": "<digest>@<id>", "content": b64}`,
201); `DELETE` (ours, not OpenShift's) removes them: all, `?name=<digest>@<id>` or
`?signer=<key ID or fingerprint>`, 202 with `{"deleted": n}`. Access on the repository
(declared on the routes below): GET pull, PUT pull+push, DELETE delete.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from trustyard.auth.scopes import GuardedRoute, on_repository
from trustyard.http.event_hooks import event_rows
from trustyard.http.params import single_values
from trustyard.http.v2 import read_limited
from trustyard.registry.signatures import SimpleSignatures


def _signatures(request: Request) -> SimpleSignatures:
    signatures: SimpleSignatures = request.app.state.simple_signatures
    return signatures


async def signatures_get(request: Request) -> Response:
    use_case = _signatures(request)
    found = await use_case.signatures(request.path_params["name"], request.path_params["digest"])
    return JSONResponse(use_case.render(found))


async def signatures_put(request: Request) -> Response:
    use_case = _signatures(request)
    body = await read_limited(request, use_case.limits.max_request_bytes, "signature upload")
    name, digest = request.path_params["name"], request.path_params["digest"]
    events = event_rows(request, lambda events: events.signature_added(name, digest))
    await use_case.put(name, digest, body, events)
    return Response(status_code=201, headers={"Content-Length": "0"})


async def signatures_delete(request: Request) -> Response:
    use_case = _signatures(request)
    params = single_values(request.scope, ("name", "signer"))
    deleted = await use_case.delete(
        request.path_params["name"], request.path_params["digest"], params["name"], params["signer"]
    )
    return JSONResponse({"deleted": deleted}, status_code=202)


def routes() -> list[GuardedRoute]:
    path = "/extensions/v2/{name:path}/signatures/{digest}"
    return [
        GuardedRoute(path, signatures_get, methods=["GET"], rights=on_repository("pull")),
        GuardedRoute(path, signatures_put, methods=["PUT"], rights=on_repository("pull", "push")),
        GuardedRoute(path, signatures_delete, methods=["DELETE"], rights=on_repository("delete")),
    ]
