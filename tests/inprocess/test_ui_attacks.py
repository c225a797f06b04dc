"""Attacks on the web UI: stored markup in everything a pusher controls, and query values
that a database refuses (NUL characters: a 500 on PostgreSQL before the fix)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.images import Image
from tests.inprocess.conftest import BASE_URL, make_settings
from tests.inprocess.helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    code,
    descriptor,
    dumps,
    make_image,
    push_image,
)
from tests.inprocess.test_ui import (  # served_fixture: test_ui's world, reused here
    Served,
    csrf_of,
    served_fixture,  # noqa: F401
)
from tests.ui_world import PASSWORDS, _login, add_accounts
from trustyard.http.app import create_app

HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'
NUL_PATHS = [
    "/ui/?q=%00",
    "/ui/?q=a%00b",
    "/ui/?after=%00",
    "/ui/repositories/lib/app?after=%00",
    "/v2/_catalog?last=%00",
    "/v2/lib/app/tags/list?last=a%00",
]


@pytest.fixture
def ui(served: Served) -> Served:
    """test_ui's world: alice, bob, root, a cosign policy, `public/*` readable by anyone."""
    return served


def hostile_image() -> Image:
    config = dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "history": [{"created": HOSTILE, "created_by": HOSTILE}],
            "config": {"Labels": {HOSTILE: HOSTILE}},
        }
    )
    layer = b"hostile layer"
    manifest = dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, layer, annotations={HOSTILE: HOSTILE})],
            "annotations": {
                HOSTILE: HOSTILE,
                "org.opencontainers.image.url": "javascript:alert(3)",
            },
        }
    )
    return Image(config, [layer], manifest, OCI_MANIFEST)


async def test_pushed_markup_is_shown_as_text(ui: Served) -> None:
    """Annotations, config history and labels are the pusher's words: every page shows them
    escaped, links only to /ui/ paths, and the CSP forbids scripts anyway."""
    _, client, _ = ui
    await _login(client, "root", "repository:public/base:push,pull")
    image = hostile_image()
    await push_image(client, "public/base", image, "evil")
    del client.headers["Authorization"]
    pages = [
        "/ui/repositories/public/base",
        f"/ui/repositories/public/base/manifests/{image.digest}?tag=evil",
        f"/ui/repositories/public/base/manifests/{image.digest}?tag={HOSTILE}",
        f"/ui/?q={HOSTILE}",
    ]
    for path in pages:
        r = await client.get(path)
        assert r.status_code == 200, (path, r.text)
        assert "<script" not in r.text and "<img" not in r.text, path
        assert 'href="javascript:' not in r.text.lower()
        assert "script-src 'none'" in r.headers["content-security-policy"]
    r = await client.get(f"/ui/repositories/public/base/manifests/{image.digest}")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text  # shown, as text


async def test_nul_in_query_values_is_a_400_on_sqlite(ui: Served) -> None:
    _, client, _ = ui
    for path in ("/ui/?q=%00", "/ui/?after=%00", "/ui/repositories/public/base?after=%00"):
        r = await client.get(path)
        assert r.status_code == 400 and "NUL" in r.text, (path, r.text)


async def test_nul_in_query_values_is_a_400_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """PostgreSQL refuses NUL in any text parameter: the UI's search and cursors and /v2's
    `last` were 500s there."""
    app = create_app(make_settings(tmp_path / "data", database_url=postgres_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            await push_image(client, "lib/app", make_image("a"), "v1")
            for path in NUL_PATHS:
                r = await client.get(path)
                assert r.status_code == 400, (path, r.text)
                assert "NUL" in r.text, (path, r.text)
                if path.startswith("/v2/"):
                    assert code(r) == "UNSUPPORTED"  # ErrorCode.PARAMETER_INVALID on the wire
            assert (await client.get("/ui/?q=app")).status_code == 200
            assert (await client.get("/v2/lib/app/tags/list?last=a")).status_code == 200


async def test_nul_in_a_user_name_is_a_failed_login_on_postgresql(
    postgres_url: str, tmp_path: Path
) -> None:
    """Basic credentials at the token endpoint, the OAuth password grant and the UI's login
    form with a NUL in the user name: a plain failed login (401), not a 500."""
    settings = make_settings(
        tmp_path / "data", database_url=postgres_url, auth={"mode": "token", "bcrypt_cost": 4}
    )
    await add_accounts(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            scope = {"service": "trustyard", "scope": "repository:lib/app:pull"}
            r = await client.get("/auth/token", params=scope, auth=("al\x00ice", "alice-pw"))
            assert r.status_code == 401, r.text
            form = {
                "grant_type": "password",
                "username": "al\x00ice",
                "password": "alice-pw",
                "service": "trustyard",
                "client_id": "test",
            }
            r = await client.post("/auth/token", data=form)
            assert r.status_code == 401, r.text
            page = await client.get("/ui/login")
            csrf = csrf_of(page.text)
            form = {"csrf": csrf, "username": "al\x00ice", "password": "alice-pw"}
            r = await client.post("/ui/login", data=form)
            assert r.status_code == 401 and "Wrong user name or password" in r.text
            r = await client.get("/auth/token", params=scope, auth=("alice", "alice-pw"))
            assert r.status_code == 200, r.text


async def test_oversized_form_is_refused_and_logs_nobody_in(ui: Served) -> None:
    """A login form past the UI's form limit (8 KiB) is refused like a bad CSRF token, whatever
    it holds: the body is not buffered past the limit and nobody is logged in."""
    _, client, _ = ui
    page = await client.get("/ui/login")
    form = {
        "csrf": csrf_of(page.text),
        "username": "alice",
        "password": PASSWORDS["alice"],
        "padding": "x" * 20_000,
    }
    r = await client.post("/ui/login", data=form)
    assert r.status_code == 403, r.text
    assert "security token" in r.text
    assert "Log out" not in (await client.get("/ui/")).text
    # The same form without the padding logs in: the refusal was the size, not the fields.
    del form["padding"]
    assert (await client.post("/ui/login", data=form)).status_code == 303
    assert "Log out" in (await client.get("/ui/")).text
