"""A small OCI distribution client: just what signing needs (manifests, one config blob).

It speaks to any registry (trustyard, distribution, zot, …) over HTTPS or, when asked, plain
HTTP, and authenticates as docker/skopeo do: credentials from a Docker `config.json` `auths`
entry, sent as HTTP Basic when the registry challenges with `Basic`, or exchanged for a bearer
token at the `realm` of a `Bearer` challenge (GET realm?service=…&scope=repository:REPO:ACTIONS).
Every manifest read is checked against its digest; blobs are streamed and checked likewise.
Layers are never requested.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from trustyard.oci import mediatypes as mt
from trustyard.oci import schema1
from trustyard.oci.errors import RegistryError
from trustyard.oci.reference import NAME_RE, is_valid_tag
from trustyard.remote.bounded import (
    DEFAULT_DEADLINE,
    ERROR_BODY,
    BodyError,
    loads_json,
    read_body,
)
from trustyard.remote.credentials import load_credentials
from trustyard.remote.token_auth import TokenAuth, drive
from trustyard.signing.errors import ReferenceNotFoundError, RemoteError
from trustyard.signing.layout import DIGEST_RE, MAX_JSON, Json, digest_of

# Schema 1 last: accepted so its JWS signatures can be listed, never preferred.
ACCEPT = ", ".join(
    [
        mt.OCI_MANIFEST,
        mt.OCI_INDEX,
        mt.DOCKER_MANIFEST,
        mt.DOCKER_MANIFEST_LIST,
        mt.DOCKER_SCHEMA1_SIGNED,
        mt.DOCKER_SCHEMA1,
    ]
)
_HOST_RE = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$")
_CHUNK = 1 << 20
_MAX_REDIRECTS = 10


@dataclass(frozen=True)
class RemoteRef:
    """`HOST[:PORT]/REPO[:TAG][@DIGEST]`; the host part is required (no implicit docker.io)."""

    host: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, text: str) -> RemoteRef:
        expected = "expected HOST[:PORT]/REPOSITORY:TAG or HOST[:PORT]/REPOSITORY@DIGEST"
        rest, _, digest = text.partition("@")
        host, slash, path = rest.partition("/")
        if not slash or not path or not _HOST_RE.match(host):
            raise RemoteError(f"invalid image reference {text!r}: {expected}")
        repo, tag = path, None
        last = path.rsplit("/", 1)[-1]
        if ":" in last:
            repo, _, tag = path.rpartition(":")
            if not is_valid_tag(tag):
                raise RemoteError(f"invalid tag {tag!r} in {text!r}: {expected}")
        if not NAME_RE.match(repo):
            raise RemoteError(
                f"invalid repository {repo!r} in {text!r}: lowercase [a-z0-9._-] components"
            )
        if digest and not DIGEST_RE.match(digest):
            raise RemoteError(f"invalid digest {digest!r} in {text!r}: expected sha256:<64 hex>")
        if tag is None and not digest:
            tag = "latest"
        return cls(host, repo, tag, digest or None)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.host}/{self.repository}{tag}{digest}"


@dataclass(frozen=True)
class Fetched:
    """A manifest or index as the registry served it, checked against its digest."""

    data: bytes
    digest: str
    media_type: str
    doc: Json


def _registry_error(response: httpx.Response, body: bytes | None = None) -> str:
    """The first `errors[]` code and message of a registry error body, or the status line."""
    try:
        doc: Any = loads_json(body if body is not None else response.content, "error body")
        errors = doc.get("errors") or []
        first = errors[0]
        return f"{first.get('code')}: {first.get('message')}"
    except (ValueError, AttributeError, IndexError, KeyError, TypeError, BodyError):
        return f"HTTP {response.status_code} {response.reason_phrase}".strip()


def _manifest_digest(
    data: bytes, doc: dict[str, Any], media_type: object, algorithm: str, what: str
) -> str:
    """The digest a registry names these bytes by: schema 1 is named by its signed payload."""
    if doc.get("schemaVersion") == 1 or media_type in mt.SCHEMA1:
        try:
            return str(schema1.manifest_digest(data, algorithm))
        except RegistryError as exc:
            raise RemoteError(f"manifest {what}: {exc.message}") from None
    return digest_of(data, algorithm)


class RegistryClient:
    """One registry host, one repository scope (pull, or pull+push for signing)."""

    def __init__(
        self,
        host: str,
        *,
        push: bool = False,
        plain_http: bool = False,
        insecure: bool = False,
        ca_file: Path | None = None,
        auth_file: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.actions = "pull,push" if push else "pull"
        self.insecure = insecure
        self.scheme = "http" if plain_http else "https"
        self._auth = TokenAuth(
            load_credentials(host, auth_file),
            insecure=insecure,
            cleartext_hint="; use HTTPS (or --insecure)",
        )
        verify: ssl.SSLContext | bool = True
        if insecure:
            verify = False
        elif ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise RemoteError(f"cannot load CA file {ca_file}: {exc}") from None
        self._http = httpx.Client(verify=verify, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport and auth ----------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{path}"

    @contextmanager
    def _request(
        self,
        method: str,
        repo: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        scope: str | None = None,
    ) -> Iterator[httpx.Response]:
        """A streamed response; one retry after answering a 401 challenge (remote/token_auth).

        The token scope is `repository:REPO:ACTIONS` unless `scope` names another ("": none)."""
        request = self._http.build_request(
            method, self._url(path), headers=headers, content=content
        )
        default = f"repository:{repo}:{self.actions}"
        flow = self._auth.flow(request, default if scope is None else scope)
        response, _ = drive(flow, self._send, self._http)
        try:
            yield response
        finally:
            response.close()

    def _send(self, request: httpx.Request) -> httpx.Response:
        """Send once; with --insecure, an HTTPS handshake failure falls back to plain HTTP."""
        while True:
            try:
                return self._follow(request)
            except httpx.ConnectError as exc:
                tls_failed = self.scheme == "https" and "SSL" in str(exc)
                if tls_failed and self.insecure:
                    self.scheme = "http"
                    request.url = request.url.copy_with(scheme="http")
                    continue
                hint = " (a plain-HTTP registry? pass --plain-http)" if tls_failed else ""
                raise RemoteError(f"cannot reach {self.host}: {exc}{hint}") from None
            except httpx.HTTPError as exc:
                raise RemoteError(f"{request.method} {request.url} failed: {exc}") from None

    def _follow(self, request: httpx.Request) -> httpx.Response:
        """Send, following redirects ourselves: httpx would read each redirect's body whole
        (a server could answer 302 with gigabytes); here they are closed unread."""
        for _ in range(_MAX_REDIRECTS):
            response = self._http.send(request, stream=True)
            if response.next_request is None:
                return response
            response.close()
            request = response.next_request
        raise RemoteError(f"{request.url.host} redirected more than {_MAX_REDIRECTS} times")

    # -- API ---------------------------------------------------------------------------------

    def _fail(self, response: httpx.Response, what: str) -> RemoteError:
        body = read_body(response, ERROR_BODY, f"{what}: error answer", truncate=True)
        detail = _registry_error(response, body)
        if response.status_code == 401:
            return RemoteError(f"{what}: not authorized by {self.host} ({detail})")
        if response.status_code == 403:
            return RemoteError(f"{what}: denied by {self.host} ({detail})")
        return RemoteError(f"{what}: {self.host} answered {detail}")

    def get_manifest(self, repo: str, reference: str) -> Fetched:
        """GET a manifest or index by tag or digest; the bytes are checked against the digest."""
        what = f"{self.host}/{repo}{'@' if DIGEST_RE.match(reference) else ':'}{reference}"
        with self._request(
            "GET", repo, f"/v2/{repo}/manifests/{reference}", headers={"Accept": ACCEPT}
        ) as r:
            if r.status_code == 404:
                body = read_body(r, ERROR_BODY, f"manifest {what}", truncate=True)
                raise ReferenceNotFoundError(
                    f"{what} does not exist in the registry ({_registry_error(r, body)})"
                )
            if r.status_code != 200:
                raise self._fail(r, f"cannot get manifest {what}")
            data = read_body(r, MAX_JSON, f"manifest {what}")
            media_type = r.headers.get("Content-Type", "").split(";")[0].strip()
            header_digest = r.headers.get("Docker-Content-Digest")
        doc = loads_json(data, f"manifest {what}")
        if not isinstance(doc, dict):
            raise RemoteError(f"manifest {what} is not a JSON object")
        media_type = doc.get("mediaType") or media_type
        expected = reference if DIGEST_RE.match(reference) else header_digest
        if expected and DIGEST_RE.match(expected):
            digest = _manifest_digest(data, doc, media_type, expected.partition(":")[0], what)
            if digest != expected:
                raise RemoteError(
                    f"manifest {what} does not match its digest {expected} (got {digest})"
                )
        else:
            digest = _manifest_digest(data, doc, media_type, "sha256", what)
        return Fetched(data, digest, str(media_type), doc)

    def hash_blob(self, repo: str, desc: Json, also: str) -> bytes:
        """Stream a blob once, check its digest and size, return its `also` hash (sha384)."""
        digest = desc.get("digest")
        if not isinstance(digest, str) or not DIGEST_RE.match(digest):
            raise RemoteError(f"descriptor has no valid digest: {desc!r}")
        own, extra, size = hashlib.new(digest.partition(":")[0]), hashlib.new(also), 0
        with self._request("GET", repo, f"/v2/{repo}/blobs/{digest}") as r:
            if r.status_code == 404:
                raise ReferenceNotFoundError(f"blob {digest} is missing from {self.host}/{repo}")
            if r.status_code != 200:
                raise self._fail(r, f"cannot get blob {digest}")
            expected = desc.get("size")
            limit = expected if isinstance(expected, int) and expected >= 0 else MAX_JSON
            end = time.monotonic() + DEFAULT_DEADLINE
            try:
                for chunk in r.iter_bytes(_CHUNK):
                    own.update(chunk)
                    extra.update(chunk)
                    size += len(chunk)
                    if size > limit:
                        raise RemoteError(
                            f"blob {digest} is larger than its descriptor's {limit} bytes; "
                            "stopped reading"
                        )
                    if time.monotonic() > end:
                        raise RemoteError(f"blob {digest} took over {DEFAULT_DEADLINE:g} s")
            except httpx.HTTPError as exc:
                raise RemoteError(
                    f"blob {digest}: the connection failed ({exc.__class__.__name__})"
                ) from None
        if f"{digest.partition(':')[0]}:{own.hexdigest()}" != digest:
            raise RemoteError(f"blob {digest} does not match its digest (tampered or corrupt)")
        if desc.get("size") != size:
            raise RemoteError(f"blob {digest} is {size} bytes, descriptor says {desc.get('size')}")
        return extra.digest()

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest or index under a tag or its digest; returns its digest."""
        digest = digest_of(data)
        with self._request(
            "PUT",
            repo,
            f"/v2/{repo}/manifests/{reference}",
            headers={"Content-Type": media_type},
            content=data,
        ) as r:
            if r.status_code not in (200, 201, 202):
                raise self._fail(r, f"cannot push manifest {digest} as {repo}:{reference}")
            answered = r.headers.get("Docker-Content-Digest")
        if answered and answered != digest:
            raise RemoteError(f"{self.host} stored the manifest as {answered}, expected {digest}")
        return digest
