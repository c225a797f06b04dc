"""authority statements (issue 20 part 2: the namespace authority's grants and revocations)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "authority_statements",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=255), nullable=True),
        sa.Column("issued", sa.Float(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("authority_statements", schema=None) as batch_op:
        batch_op.create_index("ix_authority_statements_order", ["issued", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("authority_statements", schema=None) as batch_op:
        batch_op.drop_index("ix_authority_statements_order")
    op.drop_table("authority_statements")
