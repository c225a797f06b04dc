"""Tables shared by every SQL backend (SQLite embedded, PostgreSQL when scaled out)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


def _bytewise(length: int) -> String:
    """Names listed in pages: byte-wise ("C") order on PostgreSQL too, so the primary-key and
    unique indexes serve `ORDER BY name … > last` without a sort (SQLite compares bytes anyway)."""
    return String(length).with_variant(String(length, collation="C"), "postgresql")


repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", _bytewise(255), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", String(200), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

repo_blobs = Table(
    "repo_blobs",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id"), primary_key=True),
    Column("digest", String(200), ForeignKey("blobs.digest"), primary_key=True),
    Column("linked_at", Float, nullable=False),
    Index("ix_repo_blobs_digest", "digest"),
)

manifests = Table(
    "manifests",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id"), primary_key=True),
    Column("digest", String(200), primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("size", Integer, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("subject", String(200), nullable=True),
    Column("artifact_type", String(255), nullable=True),
    Column("annotations", Text, nullable=True),
    # the last push of these bytes (a re-push refreshes it): what GC's grace period looks at
    Column("created_at", Float, nullable=False),
    Index("ix_manifests_subject", "repo_id", "subject"),
)

manifest_refs = Table(
    "manifest_refs",
    metadata,
    Column("repo_id", Integer, primary_key=True),
    Column("parent", String(200), primary_key=True),
    Column("child", String(200), primary_key=True),
    # "blob" for config/layers, "manifest" for index children.
    Column("kind", String(8), primary_key=True),
    Index("ix_manifest_refs_child", "repo_id", "child"),
)

tags = Table(
    "tags",
    metadata,
    Column("repo_id", Integer, ForeignKey("repositories.id"), primary_key=True),
    Column("name", _bytewise(128), primary_key=True),
    Column("digest", String(200), nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_tags_digest", "repo_id", "digest"),
)

uploads = Table(
    "uploads",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("repo_id", Integer, ForeignKey("repositories.id"), nullable=False),
    Column("started_at", Float, nullable=False),
)
