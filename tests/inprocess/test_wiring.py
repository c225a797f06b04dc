"""`trustyard.wiring`: one database (one engine pair, one schema check) behind every store,
everything closed once, and the CLI's `gc` working on an embedded data dir through it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.inprocess.conftest import make_settings, serve
from tests.inprocess.helpers import make_image, push_image
from tests.services.redis import RedisServer
from tests.services.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from trustyard.cache.memory import MemoryCache
from trustyard.cache.redis import RedisCache
from trustyard.cli import gc as gc_command
from trustyard.cli.app import app as cli
from trustyard.config import S3Settings, Settings
from trustyard.metadata import migrate
from trustyard.storage.filesystem import FilesystemStorage
from trustyard.storage.s3 import S3Storage
from trustyard.wiring import Database, open_services


def _token_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"auth": settings.auth.model_copy(update={"mode": "token"})})


async def test_every_store_shares_one_engine_pair(settings: Settings) -> None:
    async with await open_services(_token_settings(settings), server=True, auth=True) as s:
        assert s.registry is not None and s.auth is not None and s.trust is not None
        assert s.simple_signatures is not None
        engines = (s.database.reader, s.database.writer)
        stores: list[Any] = [
            s.registry.metadata,
            s.auth.store,
            s.trust.store,
            s.simple_signatures.store,
            s.simple_signatures.metadata,
        ]
        for store in stores:
            assert (store.reader, store.writer) == engines, store
        assert s.auth.cache is None  # no Redis: failed logins are counted per process
        assert s.registry.cache is s.cache


async def test_one_schema_check_for_all_stores(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    upgrade, check = migrate.upgrade, migrate.check

    async def counted_upgrade(engine: Any) -> tuple[str | None, str | None]:
        calls.append("upgrade")
        return await upgrade(engine)

    async def counted_check(engine: Any) -> None:
        calls.append("check")
        await check(engine)

    monkeypatch.setattr(migrate, "upgrade", counted_upgrade)
    monkeypatch.setattr(migrate, "check", counted_check)
    async with await open_services(_token_settings(settings), server=True, auth=True):
        pass
    assert calls == ["upgrade"]  # the embedded store upgrades in place, once


def _spy_on_close(monkeypatch: pytest.MonkeyPatch, cls: type, name: str, log: list[str]) -> None:
    real = cls.close

    async def spy(self: Any) -> None:
        log.append(name)
        await real(self)

    monkeypatch.setattr(cls, "close", spy)


async def test_close_releases_everything_last_opened_first(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    for cls, name in ((FilesystemStorage, "storage"), (MemoryCache, "cache"), (Database, "db")):
        _spy_on_close(monkeypatch, cls, name, closed)
    services = await open_services(_token_settings(settings), server=True, auth=True)
    assert closed == []
    await services.close()
    assert closed == ["storage", "cache", "db"]  # each once, though four stores use the db


async def test_a_failed_open_closes_what_it_opened(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[str] = []
    _spy_on_close(monkeypatch, Database, "db", closed)
    # htpasswd mode without the file: refused after the database was opened
    bad = settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"mode": "htpasswd"})}
    )
    with pytest.raises(ValueError, match="htpasswd"):
        await open_services(bad, auth=True)
    assert closed == ["db"]


async def test_the_cli_view_builds_no_trust_service(settings: Settings) -> None:
    """`gc` and `migrate-storage` need the registry only: no trust passphrase is created."""
    async with await open_services(settings) as s:
        assert s.registry is not None and s.trust is None and s.simple_signatures is None
        assert s.auth is None
    assert not (settings.data_dir / "trust" / "passphrase").exists()


async def _store_with_an_untagged_manifest(settings: Settings) -> None:
    async with serve(settings) as client:
        await push_image(client, "app", make_image("one"), "v1")
        await push_image(client, "app", make_image("two"), "v1")  # "one" loses its tag


def test_gc_cli_on_an_embedded_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CliRunner swaps stderr for a buffer it closes: structlog must not keep writing to it.
    monkeypatch.setattr(gc_command, "configure_logging", lambda level: None)
    settings = make_settings(tmp_path / "data")
    asyncio.run(_store_with_an_untagged_manifest(settings))
    args = ["gc", "--data-dir", str(settings.data_dir), "--grace-seconds", "0"]
    dry = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete manifest app@sha256:" in dry.output
    assert "dry run: 1 manifests" in dry.output
    done = CliRunner().invoke(cli, args)
    assert done.exit_code == 0, done.output
    assert "deleted manifest app@sha256:" in done.output
    again = CliRunner().invoke(cli, args)
    assert "0 manifests, 0 blobs" in again.output


async def test_with_redis_auth_counts_in_the_registry_cache(
    settings: Settings, redis_server: RedisServer
) -> None:
    shared = _token_settings(settings).model_copy(update={"redis_url": redis_server.url})
    async with await open_services(shared, server=True, auth=True) as s:
        assert s.registry is not None and s.auth is not None
        assert isinstance(s.cache, RedisCache)
        assert s.auth.cache is s.cache and s.registry.cache is s.cache  # one Redis client


async def test_postgres_and_s3_share_one_engine_pair(
    tmp_path: Path, postgres_url: str, s3_server: S3Server, s3_bucket: str
) -> None:
    s3 = S3Settings(
        bucket=s3_bucket, endpoint_url=s3_server.endpoint, access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
    )  # fmt: skip
    remote = make_settings(
        tmp_path / "data", database_url=postgres_url, storage_backend="s3", s3=s3
    )
    async with await open_services(remote, server=True) as s:
        assert isinstance(s.storage, S3Storage) and s.storage.options is s3
        assert s.registry is not None and s.trust is not None
        assert s.database.writer.dialect.name == "postgresql"
        assert s.trust.store is s.database.trust and s.registry.metadata is s.database.metadata
        assert s.registry.lookups is None  # no shared stamps without Redis: no lookup cache
