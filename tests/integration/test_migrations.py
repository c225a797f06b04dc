"""Schema migrations: models and migrations agree; replicas refuse a schema they don't know."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from trustyard.metadata.migrate import HEAD, head, target_metadata


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
            **(env or {}),
        },
    )


def test_head_constant_is_alembics_head() -> None:
    """`HEAD` lets a current schema start without Alembic: it must name the newest script."""
    assert head() == HEAD


def test_server_with_a_current_schema_never_imports_alembic(tmp_path: Path) -> None:
    code = (
        "import asyncio, sys\n"
        "from trustyard.wiring import open_database\n"
        "async def main(create):\n"
        f"    store = (await open_database({str(tmp_path / 'm.db')!r}, create=create)).metadata\n"
        "    await store.close()\n"
        "asyncio.run(main(True))\n"  # a new database: migrated through Alembic
        "print('alembic' in sys.modules)\n"
    )
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert first.stdout.strip() == "True", first.stderr
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert again.stdout.strip() == "False", again.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_models(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        url = request.getfixturevalue("empty_postgres_url")
        env = {"TRUSTYARD_DATABASE_URL": url}
    else:
        env = {"TRUSTYARD_DATA_DIR": str(tmp_path)}
        url = f"sqlite:///{tmp_path / 'metadata.db'}"
    out = run("db", "upgrade", env=env)
    assert out.returncode == 0, out.stderr
    assert f"to {head()}" in out.stdout
    assert "already at" in run("db", "upgrade", env=env).stdout
    if backend == "postgres":
        import asyncio

        from sqlalchemy.ext.asyncio import create_async_engine

        async def diff() -> list[object]:
            engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
            async with engine.connect() as conn:
                result = await conn.run_sync(
                    lambda c: compare_metadata(MigrationContext.configure(c), target_metadata())
                )
            await engine.dispose()
            return list(result)

        assert asyncio.run(diff()) == []
    else:
        with create_engine(url).connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), target_metadata()) == []


def test_replica_refuses_unmigrated_postgres(empty_postgres_url: str, tmp_path: Path) -> None:
    out = run(
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
        env={"TRUSTYARD_DATABASE_URL": empty_postgres_url},
    )
    assert out.returncode == 2
    assert "trustyard db upgrade" in out.stderr


def test_replica_refuses_newer_schema(tmp_path: Path) -> None:
    assert run("db", "upgrade", env={"TRUSTYARD_DATA_DIR": str(tmp_path)}).returncode == 0
    db = sqlite3.connect(tmp_path / "metadata.db")
    with db:
        db.execute("UPDATE alembic_version SET version_num='9999_from_the_future'")
    db.close()
    out = run("serve", "--port", "0", "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert "newer" in out.stderr and "upgrade trustyard" in out.stderr
