"""tag lifecycle (issue 21): tag history (every tag move) and manifests' last pulls (retention)

Revision ID: 0007
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tag_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("tag", sa.String(length=128), nullable=False),
        sa.Column("old_digest", sa.String(length=200), nullable=True),
        sa.Column("new_digest", sa.String(length=200), nullable=True),
        sa.Column("actor", sa.String(length=255), nullable=True),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tag_history", schema=None) as batch_op:
        batch_op.create_index("ix_tag_history_tag", ["repository", "tag", "id"], unique=False)
        batch_op.create_index("ix_tag_history_at", ["at"], unique=False)
    op.create_table(
        "manifest_pulls",
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("pulled_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("repository", "digest"),
    )


def downgrade() -> None:
    op.drop_table("manifest_pulls")
    with op.batch_alter_table("tag_history", schema=None) as batch_op:
        batch_op.drop_index("ix_tag_history_at")
        batch_op.drop_index("ix_tag_history_tag")
    op.drop_table("tag_history")
