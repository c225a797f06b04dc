"""Each audited action's entry, field by field, from the real app driven in-process (token auth,
the real issuer), plus pull sampling, proxies, retention and the policy / trust bridge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx
import pytest
from starlette.applications import Starlette

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings
from tests.inprocess.helpers import make_image, push_image
from tests.trust.helpers import GUN
from tests.trust.test_server import initialise
from tests.trust_client.test_policy_audit import Fixed
from trustyard.auth.users import Accounts
from trustyard.config import AuthSettings, PolicySettings, Settings
from trustyard.http.app import create_app
from trustyard.metadata.audit_base import (
    AuditEntry,
    AuditQuery,
    RequestContext,
    current_request,
)
from trustyard.registry.policy import KINDS, register_kind
from trustyard.trust.server.policy_audit import PolicyAudit
from trustyard.trust.store import AuditEvent
from trustyard.wiring import open_database
from trustyard.wiring.audit import Auditor
from trustyard.wiring.auth import login_limiter

REPO = "alice/app"
PEER = "127.0.0.1"  # httpx's ASGI transport's client address


def token_settings(data: Path, **audit: Any) -> Settings:
    return make_settings(
        data,
        auth={"mode": "token", "bcrypt_cost": 4},
        audit={"pull": "all", "flush_interval_seconds": 60, **audit},
    )


async def add_user(settings: Settings, name: str, password: str) -> None:
    database = await open_database(settings.metadata_target, create=True)
    try:
        accounts = Accounts(
            database.auth, limiter=login_limiter(AuthSettings(), None), bcrypt_cost=4
        )
        await accounts.add_user(name, password)
    finally:
        await database.close()


@pytest.fixture
async def served(
    tmp_path: Path, migrated_database: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    audit = getattr(request, "param", {})
    settings = token_settings(fresh_data_dir(tmp_path / "data", migrated_database), **audit)
    await add_user(settings, "alice", "alice-pw")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield app, client


async def token(client: httpx.AsyncClient, scope: str, auth: tuple[str, str]) -> str:
    r = await client.get("/auth/token", params={"service": "trustyard", "scope": scope}, auth=auth)
    assert r.status_code == 200, r.text
    value: str = r.json()["token"]
    return value


async def entries(app: Starlette, **query: Any) -> list[AuditEntry]:
    auditor: Auditor = app.state.audit
    await auditor.flush()
    found = await auditor.store.query(AuditQuery(**query))
    return list(reversed(found))  # oldest first


def fields(e: AuditEntry) -> tuple[str, str, str, str, str, str, str]:
    return (e.action, e.actor, e.client, e.repository, e.tag, e.digest, e.outcome)


async def test_push_pull_tag_move_delete_login_and_token_entries(
    served: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = served
    tok = await token(client, f"repository:{REPO}:pull,push,delete", ("alice", "alice-pw"))
    client.headers["Authorization"] = f"Bearer {tok}"
    first = await push_image(client, REPO, make_image("one"), "v1")
    second = await push_image(client, REPO, make_image("two"), "v1")  # moves v1
    r = await client.get(f"/v2/{REPO}/manifests/v1", headers={"Accept": "*/*"})
    assert r.status_code == 200
    assert (await client.head(f"/v2/{REPO}/manifests/v1")).status_code == 200  # not a pull
    assert (await client.delete(f"/v2/{REPO}/manifests/{first}")).status_code == 202
    missing = "sha256:" + "0" * 64
    assert (await client.delete(f"/v2/{REPO}/manifests/{missing}")).status_code == 404

    got = await entries(app)
    assert [fields(e) for e in got] == [
        ("login", "alice", PEER, "", "", "", "success"),
        ("token", "alice", PEER, "", "", "", "success"),
        ("push", "alice", PEER, REPO, "v1", first, "success"),
        ("push", "alice", PEER, REPO, "v1", second, "success"),
        ("tag_move", "alice", PEER, REPO, "v1", second, "success"),
        ("pull", "alice", PEER, REPO, "v1", second, "success"),
        ("delete", "alice", PEER, REPO, "", first, "success"),
        ("delete", "alice", PEER, REPO, "", missing, "not_found"),
    ]
    assert got[0].detail == {"via": "token"}
    assert got[1].detail == {"grant": "get", "scopes": [f"repository:{REPO}:pull,push,delete"]}
    assert got[4].detail == {"from": first, "to": second}
    assert got[2].detail == {"media_type": "application/vnd.oci.image.manifest.v1+json"}
    assert all(0 < time.time() - e.at < 60 for e in got)


async def test_failed_login_and_anonymous_grant(
    served: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = served
    r = await client.get("/auth/token", params={"service": "trustyard"}, auth=("alice", "nope"))
    assert r.status_code == 401
    r = await client.get(
        "/auth/token", params={"service": "trustyard", "scope": "repository:x:pull"}
    )
    assert r.status_code == 200
    got = await entries(app)
    assert [fields(e) for e in got] == [
        ("login", "alice", PEER, "", "", "", "failure"),
        ("token", "anonymous", PEER, "", "", "", "success"),
    ]
    assert got[0].detail["via"] == "token" and got[0].detail["reason"]
    assert got[1].detail == {"grant": "get", "scopes": []}


@pytest.mark.parametrize("served", [{"pull": "sample:3"}], indirect=True)
async def test_pulls_are_sampled_one_in_n(served: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = served
    tok = await token(client, f"repository:{REPO}:pull,push", ("alice", "alice-pw"))
    client.headers["Authorization"] = f"Bearer {tok}"
    await push_image(client, REPO, make_image("s"), "v1")
    for _ in range(7):
        assert (await client.get(f"/v2/{REPO}/manifests/v1")).status_code == 200
    pulls = await entries(app, action="pull")
    assert len(pulls) == 2 and all(p.detail == {"sample": 3} for p in pulls)


@pytest.mark.parametrize("served", [{"pull": "off"}], indirect=True)
async def test_pulls_off(served: tuple[Starlette, httpx.AsyncClient]) -> None:
    app, client = served
    tok = await token(client, f"repository:{REPO}:pull,push", ("alice", "alice-pw"))
    client.headers["Authorization"] = f"Bearer {tok}"
    await push_image(client, REPO, make_image("s"), "v1")
    assert (await client.get(f"/v2/{REPO}/manifests/v1")).status_code == 200
    assert await entries(app, action="pull") == []


@pytest.mark.parametrize("served", [{"trusted_proxies": ["127.0.0.0/8"]}], indirect=True)
async def test_forwarded_for_is_believed_from_a_trusted_proxy_only(
    served: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = served
    # The client claims 6.6.6.6; the proxy (127.0.0.1, trusted) saw 203.0.113.9.
    headers = {"X-Forwarded-For": "6.6.6.6, 203.0.113.9"}
    r = await client.get(
        "/auth/token", params={"service": "trustyard"}, auth=("alice", "alice-pw"), headers=headers
    )
    assert r.status_code == 200
    got = await entries(app, action="login")
    assert [e.client for e in got] == ["203.0.113.9"]


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    from trustyard.config import AuditSettings

    plain = Auditor(None, AuditSettings())  # type: ignore[arg-type]
    assert plain.client_address("10.0.0.1", "203.0.113.9") == "10.0.0.1"
    proxied = Auditor(None, AuditSettings(trusted_proxies=("10.0.0.0/8",)))  # type: ignore[arg-type]
    assert proxied.client_address("192.0.2.1", "203.0.113.9") == "192.0.2.1"  # not a proxy
    assert proxied.client_address("10.0.0.1", "203.0.113.9, 10.0.0.7") == "203.0.113.9"
    assert proxied.client_address("10.0.0.1", "not-an-ip") == "10.0.0.1"


async def test_basic_auth_logins_are_audited(tmp_path: Path, migrated_database: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("bob:" + bcrypt.hashpw(b"bob-pw", bcrypt.gensalt(4)).decode() + "\n")
    settings = make_settings(
        fresh_data_dir(tmp_path / "data", migrated_database),
        auth={"mode": "htpasswd", "htpasswd": htpasswd, "bcrypt_cost": 4},
        audit={"pull": "all"},
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            assert (await client.get("/v2/", auth=("bob", "wrong"))).status_code == 401
            assert (await client.get("/v2/", auth=("bob", "bob-pw"))).status_code == 200
            assert (await client.get("/v2/", auth=("bob", "bob-pw"))).status_code == 200  # cached
            client.auth = ("bob", "bob-pw")
            digest = await push_image(client, "bob/app", make_image("b"), "v1")
            got = await entries(app)
    assert [fields(e) for e in got] == [
        ("login", "bob", PEER, "", "", "", "failure"),
        ("login", "bob", PEER, "", "", "", "success"),
        ("push", "bob", PEER, "bob/app", "v1", digest, "success"),
    ]


async def test_retention_purges_old_entries_and_old_policy_decisions(
    tmp_path: Path, migrated_database: Path
) -> None:
    from trustyard.config import AuditSettings

    data = fresh_data_dir(tmp_path / "data", migrated_database)
    database = await open_database(data / "metadata.db", create=True)
    try:
        now = time.time()
        await database.audit.append(
            [
                AuditEntry("push", now - 10 * 86400, repository="old"),
                AuditEntry("push", now - 60, repository="new"),
            ]
        )
        await database.trust.record_audit(AuditEvent("policy_pull", "old", "x", {"allowed": True}))
        await database.trust.record_audit(AuditEvent("publish", "old", "x", {}))
        auditor = Auditor(database.audit, AuditSettings(retention_days=7))
        assert await auditor.purge() == 1
        kept = await database.audit.query(AuditQuery())
        assert sorted((e.action, e.repository) for e in kept) == [
            ("policy", "old"),
            ("push", "new"),
            ("trust", "old"),
        ]
        # Everything older than now: the policy decision goes, the trust publish stays.
        assert await database.audit.purge(time.time() + 1) == 2
        assert [e.action for e in await database.audit.query(AuditQuery())] == ["trust"]
        assert await Auditor(database.audit, AuditSettings(retention_days=0)).purge() == 0
    finally:
        await database.close()


async def test_policy_decisions_carry_the_requester(
    tmp_path: Path, migrated_database: Path
) -> None:
    data = fresh_data_dir(tmp_path / "data", migrated_database)
    database = await open_database(data / "metadata.db", create=True)
    try:
        audit = PolicyAudit(database.trust)
        token = current_request.set(RequestContext("alice", "192.0.2.4"))
        try:
            await audit(
                "team/app",
                {"action": "pull", "allowed": False, "digest": "sha256:ab", "reference": "v1"},
            )
        finally:
            current_request.reset(token)
        [entry] = await database.audit.query(AuditQuery(action="policy", actor="alice"))
        assert fields(entry) == (
            "policy",
            "alice",
            "192.0.2.4",
            "team/app",
            "v1",
            "sha256:ab",
            "denied",
        )
        assert entry.detail["event"] == "policy_pull"
        assert await database.audit.query(AuditQuery(action="trust")) == []
    finally:
        await database.close()


async def test_oauth2_password_grant_and_refused_refresh_token(
    served: tuple[Starlette, httpx.AsyncClient],
) -> None:
    app, client = served
    form = {"grant_type": "password", "service": "trustyard", "client_id": "t"}
    r = await client.post("/auth/token", data={**form, "username": "alice", "password": "x"})
    assert r.status_code == 401
    scope = f"repository:{REPO}:pull"
    r = await client.post(
        "/auth/token", data={**form, "username": "alice", "password": "alice-pw", "scope": scope}
    )
    assert r.status_code == 200, r.text
    r = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "service": "trustyard", "refresh_token": "forged"},
    )
    assert r.status_code == 401
    got = await entries(app)
    assert [(e.action, e.actor, e.outcome) for e in got] == [
        ("login", "alice", "failure"),
        ("login", "alice", "success"),
        ("token", "alice", "success"),
        ("login", "anonymous", "failure"),
    ]
    assert got[2].detail == {"grant": "password", "scopes": [scope]}
    assert got[3].detail["via"] == "refresh_token"


@pytest.mark.parametrize(
    ("audit", "message"),
    [
        ({"pull": "sometimes"}, 'audit.pull must be "off", "all" or "sample:N"'),
        ({"pull": "sample:0"}, 'audit.pull must be "off", "all" or "sample:N"'),
        ({"trusted_proxies": ["10.0.0.0/33"]}, "is not an address or CIDR"),
    ],
)
def test_bad_audit_settings_are_refused_clearly(audit: dict[str, Any], message: str) -> None:
    from trustyard.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=message):
        load_settings(None, audit=audit)


async def test_a_policy_refusal_is_one_policy_entry_with_the_requester(
    tmp_path: Path, migrated_database: Path
) -> None:
    rule = {"name": "signed-only", "repositories": ["alice/*"], "require": {"kind": "fixed"}}
    settings = token_settings(fresh_data_dir(tmp_path / "data", migrated_database))
    settings = settings.model_copy(update={"policy": PolicySettings(rules=(rule,))})
    await add_user(settings, "alice", "alice-pw")
    register_kind("fixed", Fixed)
    try:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
                tok = await token(client, f"repository:{REPO}:pull,push", ("alice", "alice-pw"))
                client.headers["Authorization"] = f"Bearer {tok}"
                digest = await push_image(client, REPO, make_image("p"), "v1")
                assert (await client.get(f"/v2/{REPO}/manifests/v1")).status_code == 403
                got = await entries(app, repository=REPO)
    finally:
        del KINDS["fixed"]
    assert [fields(e) for e in got] == [
        ("push", "alice", PEER, REPO, "v1", digest, "success"),
        ("policy", "alice", PEER, REPO, "v1", digest, "denied"),
    ]
    assert got[1].detail["policy"] == "signed-only" and got[1].detail["event"] == "policy_pull"


def _sample(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_login_outcomes_are_counted_in_metrics(
    served: tuple[Starlette, httpx.AsyncClient],
) -> None:
    _, client = served
    failed = 'trustyard_audit_entries_total{action="login",outcome="failure"}'
    before = _sample((await client.get("/metrics")).text, failed)
    r = await client.get("/auth/token", params={"service": "trustyard"}, auth=("alice", "no"))
    assert r.status_code == 401
    assert _sample((await client.get("/metrics")).text, failed) == before + 1


async def test_a_failed_batch_write_is_logged_and_counted_not_raised(
    served: tuple[Starlette, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, client = served
    auditor: Auditor = app.state.audit

    async def down(entries: Any) -> None:
        raise OSError("database down")

    monkeypatch.setattr(auditor.store, "append", down)
    lost = "trustyard_audit_write_failures_total"
    before = _sample((await client.get("/metrics")).text, lost)
    assert (await client.get("/v2/")).status_code == 401  # the registry still answers
    await client.get("/auth/token", params={"service": "trustyard"})
    await auditor.flush()
    assert _sample((await client.get("/metrics")).text, lost) == before + 1


async def test_a_trust_publish_is_read_as_a_trust_entry(
    tmp_path: Path, migrated_database: Path
) -> None:
    settings = token_settings(fresh_data_dir(tmp_path / "data", migrated_database))
    database = await open_database(settings.metadata_target, create=True)
    try:
        accounts = Accounts(
            database.auth, limiter=login_limiter(AuthSettings(), None), bcrypt_cost=4
        )
        await accounts.add_user("root", "root-pw", admin=True)
    finally:
        await database.close()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            tok = await token(client, f"repository:{GUN}:*", ("root", "root-pw"))
            client.headers["Authorization"] = f"Bearer {tok}"
            await initialise(client)
            got = await entries(app, action="trust")
    assert [(e.action, e.actor, e.repository, e.detail["event"]) for e in got] == [
        ("trust", "root", GUN, "publish")
    ]


async def test_a_write_cut_short_by_shutdown_is_written_on_close() -> None:
    from trustyard.config import AuditSettings

    written: list[AuditEntry] = []
    started = asyncio.Event()

    class SlowStore:
        calls = 0

        async def append(self, batch: list[AuditEntry]) -> None:
            self.calls += 1
            if self.calls == 1:
                started.set()
                await asyncio.sleep(3600)  # cancelled here, mid-write
            written.extend(batch)

    auditor = Auditor(SlowStore(), AuditSettings(flush_interval_seconds=0.01))  # type: ignore[arg-type]
    auditor.start()
    auditor.record("push", repository="a/b")
    await asyncio.wait_for(started.wait(), 5)
    await auditor.close()
    assert [(e.action, e.repository) for e in written] == [("push", "a/b")]
