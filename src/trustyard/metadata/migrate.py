"""Schema migrations (Alembic), shared by SQLite and PostgreSQL.

The embedded default upgrades itself at start; a PostgreSQL deployment upgrades explicitly with
`trustyard db upgrade`, and replicas refuse to start against a schema they do not know (newer
than their code) or one that is behind (not yet upgraded).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision in migrations/versions (a unit test keeps the two equal). Knowing it
# without Alembic lets a server whose schema is current start without importing Alembic at
# all: ~11 MiB less in every process (docs/benchmarks.md, memory).
HEAD = "0007"


class SchemaMismatch(RuntimeError):
    """The database schema is not the one this code was built for; the message says what to do."""


def target_metadata() -> MetaData:
    """Every table of every store, registered on one MetaData."""
    from trustyard.metadata import (  # noqa: F401 - registers tables
        audit_sql,
        auth_sql,
        authority_sql,
        events_sql,
        lifecycle_sql,
        schema,
        signatures_sql,
        trust_sql,
    )

    return schema.metadata


def _config(connection: Any | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str | None:
    """The head revision as Alembic computes it from the scripts (see `HEAD`)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


def _read_revision(connection: Any) -> str | None:
    """Alembic's version table read with plain SQL (one row; absent on a new database)."""
    if not inspect(connection).has_table("alembic_version"):
        return None
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:  # branched history: not ours, let Alembic report it
        raise SchemaMismatch(f"the database has several schema revisions: {', '.join(rows)}")
    return rows[0] if rows else None


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_read_revision)


async def upgrade(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Bring the schema to head; returns (before, after)."""
    before = await current_revision(engine)
    if before == HEAD:
        return before, before
    if before is not None and before not in _known_revisions():
        raise SchemaMismatch(
            f"the database schema is at revision {before}, which this trustyard does not know "
            "(it was migrated by a newer version): upgrade trustyard"
        )
    from alembic import command

    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_config(c), "head"))
    return before, await current_revision(engine)


async def check(engine: AsyncEngine) -> None:
    """Refuse to serve a schema other than head."""
    current = await current_revision(engine)
    if current == HEAD:
        return
    latest = head()
    if current is not None and current not in _known_revisions():
        raise SchemaMismatch(
            f"the database schema is at revision {current}, newer than this trustyard "
            f"({latest}): upgrade trustyard on this replica"
        )
    raise SchemaMismatch(
        f"the database schema is at revision {current or 'none'}, this trustyard needs {latest}: "
        "run 'trustyard db upgrade' once, then start the replicas"
    )
