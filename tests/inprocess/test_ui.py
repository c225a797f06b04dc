"""The web UI (/ui/) over the real app in-process: every page, access filtering (nobody sees a
repository, tag or signature they could not pull), login, CSRF, session tampering and expiry,
`ui = false`, and a 10,000-tag repository paging in constant time."""

from __future__ import annotations

import base64
import datetime as dt
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import itsdangerous
import pytest
from starlette.applications import Starlette

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings
from tests.inprocess.helpers import make_image, push_image
from tests.signatures.gpg import atomic_payload, make_key, stop_agent
from tests.trust.helpers import Repo
from tests.ui_world import (
    PASSWORDS,
    POLICY_RULE,
    World,
    add_accounts,
    make_keys,
    populate,
    ui_config,
)
from trustyard.config import Settings
from trustyard.crypto.notary_keys import PrivateKey
from trustyard.http.app import create_app
from trustyard.http.ui.session import COOKIE
from trustyard.metadata.audit_base import AuditQuery
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import parse_manifest
from trustyard.registry import Registry

Served = tuple[Starlette, httpx.AsyncClient, World]


def settings_for(tmp_path: Path, template: Path, **overrides: object) -> Settings:
    data = fresh_data_dir(tmp_path / "data", template)
    values = ui_config(data, tmp_path / "cosign.pub")
    values.update(overrides)
    return make_settings(**values)  # type: ignore[arg-type]


@pytest.fixture(name="served")
async def served_fixture(tmp_path: Path, migrated_database: Path) -> AsyncIterator[Served]:
    trusted, foreign = make_keys(tmp_path)
    settings = settings_for(tmp_path, migrated_database)
    await add_accounts(settings)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            world = await populate(client, trusted, foreign)
            yield app, client, world


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def login(client: httpx.AsyncClient, user: str, password: str | None = None) -> None:
    page = await client.get("/ui/login")
    form = {"csrf": csrf_of(page.text), "username": user, "password": password or PASSWORDS[user]}
    r = await client.post("/ui/login", data=form)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/ui/"


def names_listed(html: str) -> list[str]:
    return re.findall(r'<li><a href="/ui/repositories/[^"]+">([^<]+)</a></li>', html)


async def test_anonymous_sees_what_anonymous_acls_allow(served: Served) -> None:
    _, client, world = served
    r = await client.get("/ui/")
    assert r.status_code == 200
    assert names_listed(r.text) == ["public/base"]
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert (await client.get("/ui/repositories/public/base")).status_code == 200
    for path in (
        "/ui/repositories/alice/app",
        f"/ui/repositories/alice/app/manifests/{world.signed}",
        "/ui/repositories/bob/secret/-/trust",
    ):
        assert (await client.get(path)).status_code == 404, path


async def test_a_user_never_sees_another_users_private_repository(served: Served) -> None:
    _, client, world = served
    await login(client, "alice")
    r = await client.get("/ui/")
    assert names_listed(r.text) == ["alice/app", "public/base"]
    for q in ("bob", "secret", "b", ""):
        found = await client.get("/ui/", params={"q": q})
        assert "bob/secret" not in found.text, q
    missing = await client.get("/ui/repositories/nobody/here")
    for path in (
        "/ui/repositories/bob/secret",
        f"/ui/repositories/bob/secret/manifests/{world.secret}",
        "/ui/repositories/bob/secret/-/trust",
        "/ui/repositories/bob/secret/-/delete?tag=v1",
    ):
        r = await client.get(path)
        # Hidden is answered exactly like missing: the UI cannot probe for names.
        assert (r.status_code, r.text) == (404, missing.text), path
        assert "bob/secret" not in r.text and world.secret not in r.text
    r = await client.post(
        "/ui/repositories/bob/secret/-/delete", data={"csrf": csrf_of(missing.text), "tag": "v1"}
    )
    assert r.status_code == 404
    # bob's own view of it
    client.cookies.clear()
    await login(client, "bob")
    assert "bob/secret" in names_listed((await client.get("/ui/")).text)
    assert (await client.get("/ui/repositories/bob/secret")).status_code == 200


async def test_search_and_pagination_in_the_database(served: Served) -> None:
    app, client, _ = served
    await login(client, "root")
    registry: Registry = app.state.registry
    image = make_image("many")
    # 120 more visible repositories holding one manifest each, written through the store
    manifest = parse_manifest(image.manifest, image.media_type)
    for i in range(120):
        for blob in image.blobs:
            await registry.metadata.link_blob(f"team/r{i:03d}", _digest(blob), len(blob))
        await registry.metadata.put_manifest(f"team/r{i:03d}", manifest, image.manifest, ["v1"])
    first = await client.get("/ui/", params={"q": "team/"})
    assert names_listed(first.text) == [f"team/r{i:03d}" for i in range(50)]
    cursor = re.search(r'rel="next" href="([^"]+)"', first.text)
    assert cursor
    second = await client.get(cursor.group(1).replace("&amp;", "&"))
    assert names_listed(second.text) == [f"team/r{i:03d}" for i in range(50, 100)]
    assert names_listed((await client.get("/ui/", params={"q": "R11"})).text) == [
        f"team/r{i:03d}" for i in range(110, 120)
    ]
    # LIKE wildcards are text, not patterns
    assert names_listed((await client.get("/ui/", params={"q": "%"})).text) == []


def _digest(data: bytes) -> Digest:
    return Digest.of(data)


async def test_repository_page_lists_tags_with_size_platforms_pusher_and_signed(
    served: Served,
) -> None:
    _, client, world = served
    await login(client, "alice")
    r = await client.get("/ui/repositories/alice/app")
    assert r.status_code == 200
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"<tr>\s*<td><a [^>]*>([^<]+)</a></td>.*?</tr>", r.text, re.S)
    }
    assert {"signed", "forged", "unsigned", "multi"} <= set(rows)
    assert "signed</span>" in rows["signed"] and ">alice<" in rows["signed"]
    assert "signed</span>" in rows["forged"]  # a signature exists (whether it verifies: image page)
    assert "unsigned</span>" in rows["unsigned"]
    assert "linux/amd64, linux/arm64" in rows["multi"]
    assert world.signed[:19] in rows["signed"]
    assert "Delete" in rows["signed"]  # alice owns it


async def test_image_page_shows_verified_and_failed_signatures_and_the_verdict(
    served: Served,
) -> None:
    _, client, world = served
    await login(client, "alice")
    ok = await client.get(f"/ui/repositories/alice/app/manifests/{world.signed}?tag=signed")
    assert ok.status_code == 200
    assert "Would be served</strong>" in ok.text and POLICY_RULE in ok.text
    assert re.search(r'class="sig verified".*?cosign.*?verified', ok.text, re.S)
    assert "signature verified" in ok.text
    assert f"podman pull registry.test/alice/app@{world.signed}" in ok.text
    assert f"docker pull registry.test/alice/app@{world.signed}" in ok.text
    assert f"skopeo copy docker://registry.test/alice/app@{world.signed}" in ok.text
    assert ok.text.count("<td>application/vnd.oci.image.layer.v1.tar") == 2  # both layers

    bad = await client.get(f"/ui/repositories/alice/app/manifests/{world.forged}")
    assert "Would be refused</strong>" in bad.text
    assert re.search(r'class="sig failed".*?failed', bad.text, re.S)
    assert "no cosign signature by a trusted key" in bad.text

    none = await client.get(f"/ui/repositories/alice/app/manifests/{world.unsigned}")
    assert "Would be refused</strong>" in none.text
    assert f"no cosign signature of {world.unsigned} found" in none.text

    index = await client.get(f"/ui/repositories/alice/app/manifests/{world.index}")
    assert "linux/amd64" in index.text and "linux/arm64" in index.text

    # the public repository has no rule: served, nothing to check
    await login(client, "root")
    pub = await client.get(f"/ui/repositories/public/base/manifests/{world.public}")
    assert "no signature policy rule matches" in pub.text
    assert "No Notary trust data" in (await client.get("/ui/repositories/public/base/-/trust")).text


async def test_delete_tag_needs_confirmation_csrf_and_the_right(served: Served) -> None:
    app, client, _ = served
    await login(client, "root")
    # root may pull public/base; alice may pull it too but not delete it
    client.cookies.clear()
    await login(client, "alice")
    page = await client.get("/ui/repositories/public/base")
    assert page.status_code == 200 and "Delete" not in page.text
    assert (await client.get("/ui/repositories/public/base/-/delete?tag=latest")).status_code == 404

    confirm = await client.get("/ui/repositories/alice/app/-/delete?tag=unsigned")
    assert confirm.status_code == 200 and "Delete tag alice/app:unsigned?" in confirm.text
    token = csrf_of(confirm.text)
    for form in ({"tag": "unsigned"}, {"tag": "unsigned", "csrf": token + "x"}):
        refused = await client.post("/ui/repositories/alice/app/-/delete", data=form)
        assert refused.status_code == 403
    assert "?tag=unsigned" in (await client.get("/ui/repositories/alice/app")).text
    done = await client.post(
        "/ui/repositories/alice/app/-/delete", data={"tag": "unsigned", "csrf": token}
    )
    assert done.status_code == 303
    after = (await client.get("/ui/repositories/alice/app")).text
    assert "?tag=unsigned" not in after and "?tag=signed" in after
    # audited and recorded in the tag history as alice's, from her address
    await app.state.audit.flush()
    deletes = await app.state.audit.store.query(AuditQuery(action="delete"))
    assert [(e.actor, e.client, e.repository, e.tag) for e in deletes] == [
        ("alice", "127.0.0.1", "alice/app", "unsigned")
    ]
    moves = await app.state.registry.lifecycle.history.tag_history("alice/app", "unsigned", 1)
    assert (moves[0].new_digest, moves[0].actor) == (None, "alice")


async def test_login_logout_and_failed_login(served: Served) -> None:
    _, client, _ = served
    page = await client.get("/ui/login")
    assert 'name="username"' in page.text and 'name="password"' in page.text
    wrong = await client.post(
        "/ui/login",
        data={"csrf": csrf_of(page.text), "username": "alice", "password": "nope"},
    )
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    no_csrf = await client.post("/ui/login", data={"username": "alice", "password": "alice-pw"})
    assert no_csrf.status_code == 403
    await login(client, "alice")
    home = await client.get("/ui/")
    assert "alice/app" in home.text
    out = await client.post("/ui/logout", data={"csrf": csrf_of(home.text)})
    assert out.status_code == 303
    assert "alice/app" not in (await client.get("/ui/")).text


async def test_tampered_and_expired_sessions_are_anonymous(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client, _ = served
    await login(client, "alice")
    cookie = client.cookies[COOKIE]
    client.cookies.clear()

    async def home(value: str) -> str:
        return (await client.get("/ui/", headers={"Cookie": f"{COOKIE}={value}"})).text

    assert "alice/app" in await home(cookie)
    payload, _, signature = cookie.rpartition(".")
    other = "B" if payload[1] != "B" else "C"
    for forged in (payload + "." + signature[::-1], payload[0] + other + cookie[2:], "garbage"):
        assert "alice/app" not in await home(forged)
    # past ui_session_seconds (8 h by default) the signature's timestamp is too old
    later = int(time.time()) + 8 * 3600 + 5
    monkeypatch.setattr(itsdangerous.TimestampSigner, "get_timestamp", lambda self: later)
    assert "alice/app" not in await home(cookie)
    monkeypatch.undo()
    assert "alice/app" in await home(cookie)
    # a new password ends the account's sessions
    await app.state.auth.accounts.set_password("alice", "new-password")
    assert "alice/app" not in await home(cookie)


async def test_admin_pages_are_for_admins_only(served: Served) -> None:
    app, client, _ = served
    await login(client, "alice")
    assert (await client.get("/ui/admin")).status_code == 404
    assert (await client.get("/ui/admin/gc")).status_code == 404
    client.cookies.clear()
    await login(client, "root")
    await app.state.audit.flush()
    admin = await client.get("/ui/admin")
    assert admin.status_code == 200
    for text in (">alice<", ">bob<", ">root<", "public/*", ">push<", ">login<"):
        assert text in admin.text, text
    gc = await client.get("/ui/admin/gc")
    assert gc.status_code == 200 and "nothing was removed" in gc.text


async def test_ui_off_is_404(tmp_path: Path, migrated_database: Path) -> None:
    make_keys(tmp_path)
    settings = settings_for(tmp_path, migrated_database, ui=False)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            for path in ("/ui/", "/ui/login", "/ui/repositories/x", "/ui/static/ui.css"):
                assert (await client.get(path)).status_code == 404, path
            assert (await client.get("/v2/")).status_code == 401  # the registry itself runs


async def test_ten_thousand_tags_page_in_constant_time(served: Served) -> None:
    app, client, _ = served
    await login(client, "alice")
    registry: Registry = app.state.registry
    record = await registry.metadata.get_manifest("alice/app", "unsigned")
    assert record is not None
    manifest = parse_manifest(record.content, record.media_type)
    tags = [f"t{i:05d}" for i in range(10_000)]
    await registry.metadata.put_manifest("alice/app", manifest, record.content, tags)

    async def page(after: str | None) -> tuple[float, list[str]]:
        """The best of five (the machine is shared), and the tags listed."""
        params = {"after": after} if after else {}
        times = []
        for _ in range(5):
            start = time.perf_counter()
            r = await client.get("/ui/repositories/alice/app", params=params)
            times.append(time.perf_counter() - start)
            assert r.status_code == 200
        return min(times), re.findall(r"manifests/[^\"?]+\?tag=(t\d{5})", r.text)

    first_time, first = await page(None)
    assert "10006 tags" in (await client.get("/ui/repositories/alice/app")).text
    deep_time, deep = await page("t09000")
    assert deep == tags[9001:9051]
    # forged, multi, signed and two cosign `sha256-….sig` tags sort first; unsigned after t…
    assert first == tags[:45]
    # a page deep in the repository costs what the first does (keyset, not OFFSET)
    print(
        f"10,000 tags: first page {first_time * 1000:.1f} ms, page after t09000 {deep_time * 1000:.1f} ms"
    )
    assert deep_time < 1.0 and first_time < 1.0
    assert deep_time < first_time * 3 + 0.05


async def test_trust_page_shows_roles_keys_expiry_warnings_and_notary_listing(
    served: Served,
) -> None:
    _, client, world = served
    gun = "127.0.0.1:5000/alice/app"  # this server's own GUN prefix (host:port/)
    r = await client.get(
        "/auth/token",
        params={"service": "trustyard", "scope": f"repository:{gun}:*"},
        auth=("alice", PASSWORDS["alice"]),
    )
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    key = (await client.get(f"/v2/{gun}/_trust/tuf/timestamp.key", headers=auth)).json()
    repo = Repo()
    root = repo.root(key)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=10, hours=1)
    signed_manifest = make_image("signed", n_layers=2).manifest
    targets = repo.targets(
        {"signed": signed_manifest},
        expires=soon,
        delegations=[("targets/releases", PrivateKey.generate("ed25519"), [""])],
    )
    files = {
        "root": root,
        "targets": targets,
        "snapshot": repo.snapshot({"root": root, "targets": targets}),
    }
    parts = [("files", (role, data, "application/octet-stream")) for role, data in files.items()]
    posted = await client.post(f"/v2/{gun}/_trust/tuf/", files=parts, headers=auth)
    assert posted.status_code == 200, posted.text

    await login(client, "alice")
    page = await client.get("/ui/repositories/alice/app/-/trust")
    assert page.status_code == 200
    assert gun in page.text
    for role in ("root", "targets", "snapshot", "timestamp", "targets/releases"):
        assert f"<td>{role}</td>" in page.text, role
    assert "expires in 10 days" in page.text
    assert repo.targets_key.public.key_id[:16] in page.text
    image = await client.get(f"/ui/repositories/alice/app/manifests/{world.signed}")
    assert re.search(
        r'class="sig unchecked">\s*<td>notary</td>.*?targets role lists it as signed',
        image.text,
        re.S,
    )


async def test_without_authentication_everyone_reads_everything(
    client: httpx.AsyncClient,
) -> None:
    """`auth.mode = "none"` (the embedded default): the /v2 API serves everyone, so does the UI;
    there is no login and no admin page."""
    digest = await push_image(client, "team/open", make_image("open"), "v1")
    home = await client.get("/ui/")
    assert names_listed(home.text) == ["team/open"] and "Log in" not in home.text
    image = await client.get(f"/ui/repositories/team/open/manifests/{digest}")
    assert image.status_code == 200 and "no signature policy rule matches" in image.text
    login_page = await client.get("/ui/login")
    r = await client.post(
        "/ui/login",
        data={"csrf": csrf_of(login_page.text), "username": "a", "password": "b"},
    )
    assert r.status_code == 400 and "Authentication is off" in r.text
    assert (await client.get("/ui/admin")).status_code == 404
    assert (
        await client.get("/ui/repositories/team/open/manifests/sha256:" + "0" * 64)
    ).status_code == 404
    assert (await client.get("/ui/repositories/Bad..Name")).status_code == 404
    assert (await client.get("/ui/repositories/team/open/-/nothing")).status_code == 404


async def test_a_stored_simple_signature_no_rule_checks_is_listed_as_not_checked(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = make_key(tmp_path / "k", "ui")
    try:
        digest = await push_image(client, "team/simple", make_image("simple"), "v1")
        payload = atomic_payload("registry.test/team/simple:v1", digest)
        body = {
            "schemaVersion": 2,
            "type": "atomic",
            "name": f"{digest}@sig1",
            "content": base64.b64encode(key.sign(payload)).decode(),
        }
        r = await client.put(f"/extensions/v2/team/simple/signatures/{digest}", json=body)
        assert r.status_code == 201, r.text
    finally:
        stop_agent(key)
    page = await client.get(f"/ui/repositories/team/simple/manifests/{digest}")
    row = re.search(r'<tr class="sig unchecked">.*?</tr>', page.text, re.S)
    assert row, page.text
    assert "simple-signing" in row.group(0) and "not checked" in row.group(0)
    assert key.fingerprint[-16:].lower() in row.group(0).lower()
    assert "signed</span>" in (await client.get("/ui/repositories/team/simple")).text
