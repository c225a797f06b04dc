"""Schema migrations (Alembic), shared by SQLite and PostgreSQL.

The embedded default upgrades itself at start; a PostgreSQL deployment upgrades explicitly with
`trustyard db upgrade`, and replicas refuse to start against a schema they do not know (newer
than their code) or one that is behind (not yet upgraded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")


class SchemaMismatch(RuntimeError):
    """The database schema is not the one this code was built for; the message says what to do."""


def target_metadata() -> MetaData:
    """Every table of every store, registered on one MetaData."""
    from trustyard.metadata import (  # noqa: F401 - registers tables
        auth_sql,
        schema,
        signatures_sql,
        trust_sql,
    )

    return schema.metadata


def _config(connection: Any | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    return ScriptDirectory.from_config(_config()).get_current_head()


def _known_revisions() -> set[str]:
    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Bring the schema to head; returns (before, after)."""
    before = await current_revision(engine)
    if before is not None and before not in _known_revisions():
        raise SchemaMismatch(
            f"the database schema is at revision {before}, which this trustyard does not know "
            "(it was migrated by a newer version): upgrade trustyard"
        )
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_config(c), "head"))
    return before, await current_revision(engine)


async def check(engine: AsyncEngine) -> None:
    """Refuse to serve a schema other than head."""
    current, latest = await current_revision(engine), head()
    if current == latest:
        return
    if current is not None and current not in _known_revisions():
        raise SchemaMismatch(
            f"the database schema is at revision {current}, newer than this trustyard "
            f"({latest}): upgrade trustyard on this replica"
        )
    raise SchemaMismatch(
        f"the database schema is at revision {current or 'none'}, this trustyard needs {latest}: "
        "run 'trustyard db upgrade' once, then start the replicas"
    )
