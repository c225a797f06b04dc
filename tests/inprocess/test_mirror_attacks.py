"""Attacks on the pull-through mirror: a client fishing for blobs it may not pull through a
mirrored repository, and a hostile upstream whose token challenge names a third host's realm.

The mirror is the real app; upstreams are real in-process apps (a trustyard, or a small hostile
Starlette app) reached over httpx's ASGI transport, which delivers every host's requests to that
one app, so the hostile app sees (and records) what the mirror sends to any host.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings
from tests.inprocess.helpers import OCI_INDEX, code, make_image, push_image
from tests.inprocess.mirrors import mirror_pair, point_upstream
from tests.ui_world import PASSWORDS, add_accounts
from trustyard.http.app import create_app
from trustyard.oci.digest import Digest
from trustyard.registry.mirror import Mirrors
from trustyard.remote.credentials import Credentials
from trustyard.remote.upstream import UpstreamRegistry
from trustyard.remote.upstream_errors import UpstreamUnavailable
from trustyard.wiring import open_database

UPSTREAM_URL = "https://upstream.test"


async def _token(client: httpx.AsyncClient, scope: str, user: str | None = None) -> str:
    client.headers.pop("Authorization", None)
    auth = (user, PASSWORDS[user]) if user else None
    r = await client.get("/auth/token", params={"service": "trustyard", "scope": scope}, auth=auth)
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


@pytest.fixture
async def guarded(
    tmp_path: Path, migrated_database: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette]]:
    """An upstream trustyard (auth off) and a mirror with token auth: `hub/*` mirrors the
    upstream's `lib/*` and anyone may pull it; bob's repositories are bob's alone."""
    upstream_app = create_app(make_settings(fresh_data_dir(tmp_path / "up", migrated_database)))
    mirrors = [{"prefix": "hub", "upstream": UPSTREAM_URL, "upstream_prefix": "lib"}]
    settings = make_settings(
        fresh_data_dir(tmp_path / "mirror", migrated_database),
        mirrors=mirrors,
        auth={"mode": "token", "bcrypt_cost": 4},
    )
    await add_accounts(settings)
    database = await open_database(settings.metadata_target, create=True)
    try:
        await database.auth.add_rule("anonymous", "hub/*", ("pull",))
    finally:
        await database.close()
    mirror_app = create_app(settings)
    async with mirror_pair(upstream_app, mirror_app, UPSTREAM_URL) as (up, down):
        yield up, down, mirror_app


async def test_private_blob_not_readable_through_a_mirrored_repository(
    guarded: tuple[httpx.AsyncClient, httpx.AsyncClient, Starlette],
) -> None:
    """A blob stored for bob's private repository must not be mounted into `hub/x` because an
    anonymous client asked for its digest there (the upstream never had it)."""
    up, down, mirror_app = guarded
    secret = make_image("bob's secret layer")
    bob = await _token(down, "repository:bob/secret:push,pull", "bob")
    down.headers["Authorization"] = f"Bearer {bob}"
    await push_image(down, "bob/secret", secret, "v1")
    anonymous = await _token(down, "repository:hub/app:pull")
    down.headers["Authorization"] = f"Bearer {anonymous}"
    layer = Digest.of(secret.blobs[-1])
    assert (await down.get(f"/v2/bob/secret/blobs/{layer}")).status_code in (401, 403)

    r = await down.get(f"/v2/hub/app/blobs/{layer}")
    assert r.status_code == 404 and code(r) == "BLOB_UNKNOWN", r.text
    r = await down.head(f"/v2/hub/app/blobs/{layer}")
    assert r.status_code == 404
    registry = mirror_app.state.registry
    assert await registry.metadata.blob_size("hub/app", layer) is None

    # A blob the upstream holds for that repository is linked from storage; one it holds
    # elsewhere only is not (the upstream answers per repository, like this registry).
    public = make_image("public", n_layers=1)
    await push_image(up, "lib/app", public, "v1")
    await push_image(up, "lib/other", public, "v1")
    shared = Digest.of(public.blobs[-1])
    for repository, status in (("app", 200), ("other", 200), ("third", 404)):
        token = await _token(down, f"repository:hub/{repository}:pull")
        down.headers["Authorization"] = f"Bearer {token}"
        r = await down.get(f"/v2/hub/{repository}/blobs/{shared}")
        assert r.status_code == status, (repository, r.text)
        if status == 200:
            assert r.content == public.blobs[-1]


class Hostile:
    """An upstream whose registry asks for a bearer token from a realm on a third host, and
    records every request it receives (for whichever host) with its Authorization header."""

    def __init__(self, realm: str) -> None:
        self.realm = realm
        self.seen: list[tuple[str, str, str | None]] = []

    def app(self) -> Starlette:
        async def any_path(request: Request) -> Response:
            host = request.headers.get("host", "")
            self.seen.append((host, request.url.path, request.headers.get("authorization")))
            if request.url.path.startswith("/token"):
                return JSONResponse({"token": "stolen"})
            challenge = f'Bearer realm="{self.realm}",service="upstream.test"'
            return Response(status_code=401, headers={"WWW-Authenticate": challenge})

        return Starlette(routes=[Route("/{path:path}", any_path, methods=["GET", "HEAD"])])


@pytest.mark.parametrize(
    ("realm", "allowed"),
    [
        ("https://evil.test/token", False),
        ("https://upstream.test.evil.test/token", False),
        ("https://auth.upstream.test/token", True),  # a sibling host, like auth.docker.io
        ("https://upstream.test:8443/token", True),  # the parent host on another port
        ("https://10.0.0.1/token", False),
    ],
)
async def test_token_realm_on_a_third_host_gets_no_credentials(realm: str, allowed: bool) -> None:
    hostile = Hostile(realm)
    upstream = UpstreamRegistry(
        "https://registry.upstream.test",
        credentials=Credentials("mirror-user", "mirror-secret"),
        transport=httpx.ASGITransport(app=hostile.app()),
    )
    try:
        with pytest.raises(Exception) as failed:
            await upstream.get_manifest("lib/app", "v1")
    finally:
        await upstream.aclose()
    realm_host = httpx.URL(realm).netloc.decode()
    to_realm = [auth for host, path, auth in hostile.seen if path == "/token"]
    if allowed:
        assert to_realm and to_realm[0] == Credentials("mirror-user", "mirror-secret").basic()
    else:
        assert all(auth is None for host, _, auth in hostile.seen if host == realm_host)
        assert "mirror-secret" not in str(failed.value)
        assert realm_host.split(":")[0] in str(failed.value)


class WrongBlob:
    """An upstream that serves bytes of the right length but the wrong content for a blob."""

    def __init__(self, size: int) -> None:
        self.size = size

    def app(self) -> Starlette:
        async def blob(request: Request) -> Response:
            return Response(b"y" * self.size, media_type="application/octet-stream")

        return Starlette(routes=[Route("/v2/{path:path}", blob, methods=["GET", "HEAD"])])


@pytest.fixture
async def mirror_only(tmp_path: Path, migrated_database: Path) -> AsyncIterator[Starlette]:
    mirrors = [{"prefix": "hub", "upstream": UPSTREAM_URL, "upstream_prefix": "lib"}]
    app = create_app(
        make_settings(fresh_data_dir(tmp_path / "mirror", migrated_database), mirrors=mirrors)
    )
    async with app.router.lifespan_context(app):
        yield app


async def test_client_never_gets_the_whole_of_a_wrong_blob(mirror_only: Starlette) -> None:
    """A blob streamed to the client while it is cached: when the upstream's bytes do not hash
    to the digest, the client's copy breaks off before its declared length (a client that
    trusts a complete 200 would otherwise keep the wrong bytes), and nothing is stored."""
    good = b"the real layer " * 100
    digest = Digest.of(good)
    await point_upstream(mirror_only, WrongBlob(len(good)).app(), UPSTREAM_URL)
    state: Mirrors = mirror_only.state.mirrors
    opened = await state.open_blob("hub/app", digest)
    assert not isinstance(opened, str)
    length, tee = opened
    assert length == len(good)
    received = b""
    with pytest.raises(UpstreamUnavailable, match="hash to"):
        async for chunk in tee.body():
            received += chunk
    assert len(received) < len(good)
    await state._blobs.wait_all()
    registry = mirror_only.state.registry
    assert await registry.storage.stat(digest) is None
    assert await registry.metadata.blob_size("hub/app", digest) is None


@contextlib.asynccontextmanager
async def trickling_server() -> AsyncIterator[int]:
    """A socket server that answers every request with a status line and then one header byte
    every 0.1 s, forever: each read arrives well within any per-read timeout."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while True:
                await writer.drain()
                await asyncio.sleep(0.1)
                writer.write(b"a")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def test_upstream_trickling_its_headers_is_a_timely_503(
    tmp_path: Path, migrated_database: Path
) -> None:
    async with trickling_server() as port:
        mirrors = [
            {"prefix": "hub", "upstream": f"http://127.0.0.1:{port}", "timeout_seconds": 0.5}
        ]
        app = create_app(
            make_settings(fresh_data_dir(tmp_path / "mirror", migrated_database), mirrors=mirrors)
        )
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as c,
        ):
            start = time.monotonic()
            r = await asyncio.wait_for(c.get("/v2/hub/app/manifests/v1"), 30)
            assert r.status_code == 503 and code(r) == "UNAVAILABLE", r.text
            assert "did not answer" in r.text
            state: Mirrors = app.state.mirrors
            with pytest.raises(UpstreamUnavailable):
                await asyncio.wait_for(state.mirrors[0].upstreams[0].ping(), 30)
            assert time.monotonic() - start < 10


async def test_ui_cannot_delete_a_mirrored_tag(tmp_path: Path, migrated_database: Path) -> None:
    """/v2 refuses deletes in a mirrored prefix; the UI's delete form must not get round it."""
    upstream_app = create_app(make_settings(fresh_data_dir(tmp_path / "up", migrated_database)))
    mirrors = [{"prefix": "hub", "upstream": UPSTREAM_URL, "upstream_prefix": "lib"}]
    mirror_app = create_app(
        make_settings(fresh_data_dir(tmp_path / "mirror", migrated_database), mirrors=mirrors)
    )
    async with mirror_pair(upstream_app, mirror_app, UPSTREAM_URL) as (up, down):
        await push_image(up, "lib/app", make_image("cached"), "v1")
        assert (await down.get("/v2/hub/app/manifests/v1")).status_code == 200
        assert (await down.delete("/v2/hub/app/manifests/v1")).status_code == 403
        page = await down.get("/ui/repositories/hub/app")
        assert page.status_code == 200 and "/-/delete" not in page.text
        confirm = await down.get("/ui/repositories/hub/app/-/delete?tag=v1")
        assert confirm.status_code == 403 and "mirror" in confirm.text
        login = await down.get("/ui/login")  # a page with a form: the session's token
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "tag": "v1"}
        r = await down.post("/ui/repositories/hub/app/-/delete", data=form)
        assert r.status_code == 403 and "pushes are refused" in r.text
        registry = mirror_app.state.registry
        assert await registry.metadata.get_manifest("hub/app", "v1") is not None


class Lying:
    """An upstream registry that lies in one way (`mode`) about image `image`, and records
    every request with its host and Authorization header."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.image = make_image("lying", n_layers=1)
        self.seen: list[tuple[str, str, str | None]] = []

    def _manifest(self, host: str, path: str) -> Response:
        body, media_type = self.image.manifest, self.image.media_type
        digest = str(Digest.of(body))
        if self.mode == "oversized":
            body = b" " * (5 << 20) + body
        elif self.mode == "wrong-digest":
            digest = str(Digest.of(b"another manifest"))
        elif self.mode == "media-type-lie":
            media_type = OCI_INDEX
        elif self.mode == "not-json":
            body = b"<html>not a manifest</html>"
            digest = str(Digest.of(body))
        elif self.mode == "deep":
            body = b"[" * 100_000 + b"]" * 100_000
            digest = str(Digest.of(body))
        elif self.mode == "redirect" and host == "registry.upstream.test":
            return RedirectResponse(f"https://cdn.elsewhere.test{path}", 302)
        headers = {"Content-Type": media_type, "Docker-Content-Digest": digest}
        return Response(body, headers=headers)

    def app(self) -> Starlette:
        async def any_path(request: Request) -> Response:
            host, path = request.headers.get("host", ""), request.url.path
            self.seen.append((host, path, request.headers.get("authorization")))
            if self.mode == "redirect" and host == "registry.upstream.test":
                if "authorization" not in request.headers:
                    return Response(status_code=401, headers={"WWW-Authenticate": "Basic"})
            if "/manifests/" in path:
                response = self._manifest(host, path)
                return Response(headers=response.headers) if request.method == "HEAD" else response
            for blob in self.image.blobs:
                if path.endswith(str(Digest.of(blob))):
                    return Response(blob + b"x" * 100 if self.mode == "bigger-blob" else blob)
            return Response(status_code=404)

        return Starlette(routes=[Route("/{path:path}", any_path, methods=["GET", "HEAD"])])


@pytest.mark.parametrize(
    "mode", ["oversized", "wrong-digest", "media-type-lie", "not-json", "deep"]
)
async def test_lying_upstream_is_a_503_and_nothing_is_cached(
    mirror_only: Starlette, mode: str
) -> None:
    lying = Lying(mode)
    await point_upstream(mirror_only, lying.app(), UPSTREAM_URL)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mirror_only), base_url=BASE_URL
    ) as client:
        r = await client.get("/v2/hub/app/manifests/v1")
    assert r.status_code == 503 and code(r) == "UNAVAILABLE", r.text
    registry = mirror_only.state.registry
    assert await registry.metadata.get_manifest("hub/app", "v1") is None
    for blob in lying.image.blobs:
        assert await registry.metadata.blob_size("hub/app", Digest.of(blob)) is None


async def test_blob_bigger_than_its_descriptor_is_never_cached(mirror_only: Starlette) -> None:
    """A cold manifest answers before its blobs (they stream on demand): the lie is caught on the
    blob GET, which never completes as a good answer, and nothing of the blob is stored."""
    lying = Lying("bigger-blob")
    await point_upstream(mirror_only, lying.app(), UPSTREAM_URL)
    registry = mirror_only.state.registry
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=mirror_only, raise_app_exceptions=False),
        base_url=BASE_URL,
    ) as client:
        r = await client.get("/v2/hub/app/manifests/v1")
        assert r.status_code == 200, r.text
        for blob in lying.image.blobs:
            digest = Digest.of(blob)
            try:
                r = await client.get(f"/v2/hub/app/blobs/{digest}")
            except httpx.HTTPError:
                pass  # broken off mid-body: the client never gets the declared length
            else:
                # The status went out before the lie was seen: the body breaks off short of
                # the declared length (a real client sees the connection end early), or 503.
                assert r.status_code == 503 or (
                    r.status_code == 200 and len(r.content) < len(blob)
                ), (r.status_code, len(r.content))
            assert await registry.metadata.blob_size("hub/app", digest) is None


async def test_redirect_to_another_host_carries_no_credentials(mirror_only: Starlette) -> None:
    lying = Lying("redirect")
    await point_upstream(
        mirror_only,
        lying.app(),
        "https://registry.upstream.test",
        Credentials("mirror-user", "mirror-secret"),
    )
    state: Mirrors = mirror_only.state.mirrors
    # The upstream asks for Basic, then redirects the authenticated request to a CDN host.
    upstream = state.mirrors[0].upstreams[0]
    fetched = await upstream.get_manifest("lib/app", "v1")
    assert fetched.content == lying.image.manifest
    elsewhere = [auth for host, _, auth in lying.seen if host == "cdn.elsewhere.test"]
    at_home = [auth for host, _, auth in lying.seen if host == "registry.upstream.test"]
    assert elsewhere == [None]
    assert at_home == [None, Credentials("mirror-user", "mirror-secret").basic()]
