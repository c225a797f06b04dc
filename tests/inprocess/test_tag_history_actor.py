"""API tag moves name their actor in the tag history: the verified token subject, or
`anonymous` when the registry runs without auth (issue 21, gap 4)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings
from tests.inprocess.helpers import make_image, push_image
from tests.inprocess.test_audit import add_user, token
from trustyard.config import Settings
from trustyard.http.app import create_app
from trustyard.wiring import open_database

REPO = "alice/hist"


async def history(settings: Settings, tag: str) -> list[tuple[str | None, str | None, str | None]]:
    database = await open_database(settings.metadata_target)
    try:
        moves = await database.lifecycle.tag_history(REPO, tag, 100)
    finally:
        await database.close()
    return [(m.old_digest, m.new_digest, m.actor) for m in moves]


async def test_token_pushes_and_deletes_record_the_subject(
    tmp_path: Path, migrated_database: Path
) -> None:
    settings = make_settings(
        fresh_data_dir(tmp_path / "data", migrated_database),
        auth={"mode": "token", "bcrypt_cost": 4},
    )
    await add_user(settings, "alice", "alice-pw")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            tok = await token(client, f"repository:{REPO}:pull,push,delete", ("alice", "alice-pw"))
            client.headers["Authorization"] = f"Bearer {tok}"
            first = await push_image(client, REPO, make_image("h1"), "latest")
            second = await push_image(client, REPO, make_image("h2"), "latest")
            assert (await client.delete(f"/v2/{REPO}/manifests/latest")).status_code == 202
    assert await history(settings, "latest") == [
        (second, None, "alice"),
        (first, second, "alice"),
        (None, first, "alice"),
    ]


async def test_unauthenticated_pushes_record_anonymous(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            digest = await push_image(client, REPO, make_image("anon"), "v1")
    assert await history(settings, "v1") == [(None, digest, "anonymous")]
