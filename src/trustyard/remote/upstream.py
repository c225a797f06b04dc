"""An async client for one upstream registry: what the pull-through mirror reads from.

Manifests by tag or digest (HEAD first, then GET, the Accept header naming every OCI and Docker
v2 type including indexes), blobs streamed under a size bound and a deadline, and `get_bytes` /
`stream` for any other path (referrers, `sha256-<hex>.sig` tags, extension endpoints), all
through one authenticated `httpx.AsyncClient`. Authentication is `TokenAuth`'s flow (Basic, or
the Docker token exchange as a client) run over streamed sends, so 401 bodies are never read
and token answers are read bounded (`remote/bounded.py`).

Errors say what the caller can do about them: `UpstreamUnavailable` (connection failed, timed
out, 5xx or 429: serve what is cached), `UpstreamNotFound` (404), and `RemoteError` for
anything else (refused credentials, a broken answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from trustyard.remote.bounded import (
    DEFAULT_DEADLINE,
    ERROR_BODY,
    TOKEN_BODY,
    BodyError,
    aread_body,
    buffered,
)
from trustyard.remote.credentials import Credentials
from trustyard.remote.errors import RemoteError
from trustyard.remote.token_auth import MAX_STEPS, Flow, TokenAuth, TokenRequest
from trustyard.remote.upstream_errors import (
    FetchedManifest,
    ManifestHead,
    UpstreamNotFound,
    UpstreamUnavailable,
)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
MANIFEST_LIMIT = 4 * 1024 * 1024
BLOB_DEADLINE = 3600.0  # one blob, however slowly it arrives
HEADERS_DEADLINE_FACTOR = 4  # request, token request, request again, and some slack


class UpstreamRegistry:
    """One upstream registry at `base_url` (`https://host[:port]`), with its own credentials.

    `tls_verify` False skips certificate checks; `ca_file` trusts that CA bundle instead of
    the system's. `timeout` bounds connecting and every single read; an answer's status and
    headers must arrive within `HEADERS_DEADLINE_FACTOR * timeout` all told (a server that
    trickles header bytes never trips the per-read timeout); bodies have their own deadline.
    """

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        tls_verify: bool = True,
        ca_file: Path | None = None,
        timeout: float = 30.0,
        max_manifest_bytes: int = MANIFEST_LIMIT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_manifest_bytes = max_manifest_bytes
        self.headers_deadline = HEADERS_DEADLINE_FACTOR * timeout
        verify: bool | str = str(ca_file) if ca_file is not None and tls_verify else tls_verify
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            verify=verify,
            timeout=httpx.Timeout(timeout),
            follow_redirects=True,
            transport=transport,
            headers={"User-Agent": "trustyard-mirror"},
        )
        self._auth = TokenAuth(
            credentials, cleartext_hint=" (use https for the upstream)", realm_near_host=True
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- generic ---------------------------------------------------------------------------
    async def send(
        self,
        method: str,
        path: str,
        *,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send `method path` with auth; the answer is still streamed (read it bounded, close it).

        Transport failures, 5xx and 429 are `UpstreamUnavailable`.
        """
        request = self._http.build_request(method, path, headers=headers)
        flow = self._auth.flow(request, scope)
        try:
            async with asyncio.timeout(self.headers_deadline):
                response = await self._answer(flow)
        except TimeoutError:
            raise UpstreamUnavailable(
                f"upstream {self.base_url} did not answer {method} {path} within "
                f"{self.headers_deadline:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"upstream {self.base_url} failed: {exc.__class__.__name__} {exc}".strip()
            ) from None
        if response.status_code >= 500 or response.status_code == 429:
            await response.aclose()
            raise UpstreamUnavailable(
                f"upstream {self.base_url} answered HTTP {response.status_code} to {method} {path}"
            )
        return response

    async def _answer(self, flow: Flow) -> httpx.Response:
        """Run the auth flow over streamed sends; the last answer, still streamed."""
        sent = next(flow)
        for _ in range(MAX_STEPS):
            if isinstance(sent, TokenRequest):
                response = await self._token_answer(sent)
            else:
                response = await self._http.send(sent, stream=True)
            try:
                sent = flow.send(response)
            except StopIteration:
                break
            except BaseException:
                await response.aclose()
                raise
            await response.aclose()
        else:
            raise RemoteError(f"{self.base_url} kept asking for authentication")
        return response

    async def _token_answer(self, request: TokenRequest) -> httpx.Response:
        what = f"token server {request.realm}'s answer"
        try:
            response = await self._http.send(request, stream=True)
            try:
                ok = response.status_code == 200
                body = await aread_body(
                    response, TOKEN_BODY if ok else ERROR_BODY, what, truncate=not ok
                )
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"token server {request.realm} failed: {exc.__class__.__name__}"
            ) from None
        except BodyError as exc:
            raise RemoteError(str(exc)) from None
        return buffered(response, body)

    async def get_bytes(
        self,
        path: str,
        *,
        limit: int,
        scope: str | None = None,
        headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> httpx.Response:
        """`method path` with its body read under `limit` (an error body cut at `ERROR_BODY`).

        404 is `UpstreamNotFound`; any other status is returned for the caller to judge.
        """
        response = await self.send(method, path, scope=scope, headers=headers)
        try:
            ok = 200 <= response.status_code < 300
            if method == "HEAD":
                body = b""
            else:
                body = await aread_body(
                    response,
                    limit if ok else ERROR_BODY,
                    f"{self.base_url}{path}",
                    truncate=not ok,
                )
        except BodyError as exc:
            raise UpstreamUnavailable(str(exc)) from None
        finally:
            await response.aclose()
        if response.status_code == 404:
            raise UpstreamNotFound(f"upstream {self.base_url} has no {path}")
        return buffered(response, body)

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, *, scope: str | None = None, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.Response]:
        """GET `path` and hand over the streamed 200 answer (closed on leaving)."""
        response = await self.send("GET", path, scope=scope, headers=headers)
        try:
            if response.status_code == 404:
                raise UpstreamNotFound(f"upstream {self.base_url} has no {path}")
            if response.status_code != 200:
                raise self._refused("GET", path, response.status_code)
            yield response
        finally:
            await response.aclose()

    def _refused(self, method: str, path: str, status: int) -> RemoteError:
        if status in (401, 403):
            return RemoteError(
                f"upstream {self.base_url} refused {method} {path} (HTTP {status}): check the "
                "mirror's username and password"
            )
        return RemoteError(f"upstream {self.base_url} answered HTTP {status} to {method} {path}")

    # -- registry API ------------------------------------------------------------------------
    @staticmethod
    def pull_scope(repository: str) -> str:
        return f"repository:{repository}:pull"

    async def ping(self) -> tuple[int, float]:
        """GET /v2/ without credentials: the status (200 or 401 both mean "up") and seconds."""
        start = time.monotonic()
        try:  # headers only, within the deadline: the body of a hostile /v2/ may never end
            async with asyncio.timeout(self.headers_deadline):
                response = await self._http.send(
                    self._http.build_request("GET", "/v2/"), stream=True
                )
            await response.aclose()
        except TimeoutError:
            raise UpstreamUnavailable(
                f"upstream {self.base_url} did not answer within {self.headers_deadline:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"upstream {self.base_url} failed: {exc.__class__.__name__}"
            ) from None
        return response.status_code, time.monotonic() - start

    async def head_manifest(self, repository: str, reference: str) -> ManifestHead:
        path = f"/v2/{repository}/manifests/{reference}"
        response = await self.get_bytes(
            path,
            limit=0,
            method="HEAD",
            scope=self.pull_scope(repository),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code != 200:
            raise self._refused("HEAD", path, response.status_code)
        length = response.headers.get("content-length", "")
        return ManifestHead(
            response.headers.get("docker-content-digest"),
            response.headers.get("content-type", "").split(";", 1)[0].strip(),
            int(length) if length.isdigit() else None,
        )

    async def get_manifest(self, repository: str, reference: str) -> FetchedManifest:
        path = f"/v2/{repository}/manifests/{reference}"
        response = await self.get_bytes(
            path,
            limit=self.max_manifest_bytes,
            scope=self.pull_scope(repository),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code != 200:
            raise self._refused("GET", path, response.status_code)
        return FetchedManifest(
            response.content,
            response.headers.get("content-type", "").split(";", 1)[0].strip(),
            response.headers.get("docker-content-digest"),
        )

    async def head_blob(self, repository: str, digest: str) -> None:
        """The upstream has blob `digest` in `repository` (else `UpstreamNotFound`)."""
        path = f"/v2/{repository}/blobs/{digest}"
        response = await self.get_bytes(
            path, limit=0, method="HEAD", scope=self.pull_scope(repository)
        )
        if response.status_code != 200:
            raise self._refused("HEAD", path, response.status_code)

    @contextlib.asynccontextmanager
    async def blob(self, repository: str, digest: str) -> AsyncIterator[httpx.Response]:
        """The streamed blob; read it with `chunks` for the size bound and the deadline."""
        async with self.stream(
            f"/v2/{repository}/blobs/{digest}", scope=self.pull_scope(repository)
        ) as response:
            yield response

    async def chunks(
        self, response: httpx.Response, limit: int, deadline: float = BLOB_DEADLINE
    ) -> AsyncIterator[bytes]:
        """A streamed body chunk by chunk: more than `limit` bytes (0: no limit) or past
        `deadline` seconds is `UpstreamUnavailable`, as is a connection broken mid-body."""
        end = time.monotonic() + (deadline or DEFAULT_DEADLINE)
        received = 0
        try:
            async for chunk in response.aiter_bytes():
                received += len(chunk)
                if limit and received > limit:
                    raise UpstreamUnavailable(
                        f"upstream {self.base_url} sent more than the {limit} bytes expected"
                    )
                if time.monotonic() > end:
                    raise UpstreamUnavailable(
                        f"upstream {self.base_url} took longer than {deadline:g} s for one blob"
                    )
                yield chunk
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"upstream {self.base_url} broke off a blob ({exc.__class__.__name__})"
            ) from None
