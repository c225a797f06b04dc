"""Byte-wise ("C") collation for paged names on PostgreSQL

Tag lists and the catalog page with `ORDER BY name` and `name > last`; under a locale collation
PostgreSQL cannot use the existing indexes for that order and sorts every row (7-9x slower at
100k tags). With "C" the primary-key and unique indexes serve the pages directly. SQLite already
compares bytes: nothing to do there.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("tags", "name", type_=sa.String(128, collation="C"), existing_nullable=False)
    op.alter_column(
        "repositories", "name", type_=sa.String(255, collation="C"), existing_nullable=False
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("tags", "name", type_=sa.String(128), existing_nullable=False)
    op.alter_column("repositories", "name", type_=sa.String(255), existing_nullable=False)
