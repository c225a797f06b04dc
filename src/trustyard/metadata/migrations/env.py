"""Alembic environment: migrations run on a connection the caller opened (see metadata/migrate.py).

Same migrations for SQLite and PostgreSQL; SQLite needs batch mode for ALTERs.
"""

from __future__ import annotations

from alembic import context

from trustyard.metadata.migrate import target_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through trustyard (trustyard db upgrade), not the alembic CLI"
    )
context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
