"""simple signatures (containers signatures extension API)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "simple_signatures",
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["repositories.id"]),
        sa.PrimaryKeyConstraint("repo_id", "digest", "name"),
    )
    with op.batch_alter_table("simple_signatures", schema=None) as batch_op:
        batch_op.create_index("ix_simple_signatures_digest", ["repo_id", "digest"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("simple_signatures", schema=None) as batch_op:
        batch_op.drop_index("ix_simple_signatures_digest")
    op.drop_table("simple_signatures")
