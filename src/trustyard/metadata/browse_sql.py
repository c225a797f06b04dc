"""`metadata.browse_base.BrowseIndex` on SQL: the web UI's pages as keyset-paginated queries.

Each page is one query served by existing indexes: tags by the `tags` primary key
(repo_id, name), a tag's last move by `ix_tag_history_tag`, signatures by `ix_manifests_subject`,
`ix_simple_signatures_digest` and the tags primary key again (cosign's `<alg>-<hex>.sig`). So a
page of a repository with 10,000 tags costs what a page of one with ten does.
"""

from __future__ import annotations

from sqlalchemy import and_, exists, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import aliased

from trustyard.metadata import schema as t
from trustyard.metadata.browse_base import TagRow
from trustyard.metadata.lifecycle_sql import tag_history
from trustyard.metadata.signatures_sql import simple_signatures


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class SqlBrowseStore:
    """Implements `metadata.browse_base.BrowseIndex` on the reader engine."""

    def __init__(self, reader: AsyncEngine) -> None:
        self.reader = reader

    async def search_repositories(self, text: str, limit: int, after: str | None) -> list[str]:
        r, m = t.repositories, t.manifests
        query = select(r.c.name).where(exists().where(m.c.repo_id == r.c.id))
        if text:
            query = query.where(r.c.name.like(_like_pattern(text), escape="\\"))
        if after is not None:
            query = query.where(r.c.name > after)
        query = query.order_by(r.c.name).limit(limit)
        async with self.reader.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def tag_page(self, repository: str, limit: int, after: str | None) -> list[TagRow]:
        r, tg, m, h, s = t.repositories, t.tags, t.manifests, tag_history, simple_signatures
        repo_id = select(r.c.id).where(r.c.name == repository).scalar_subquery()
        pushed_by = (
            select(h.c.actor)
            .where(h.c.repository == repository, h.c.tag == tg.c.name)
            .order_by(h.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        referrer = aliased(m)
        sig_tag = aliased(tg)
        cosign_name = func.replace(tg.c.digest, ":", "-") + literal(".sig")
        signed = or_(
            exists().where(referrer.c.repo_id == tg.c.repo_id, referrer.c.subject == tg.c.digest),
            exists().where(s.c.repo_id == tg.c.repo_id, s.c.digest == tg.c.digest),
            exists().where(sig_tag.c.repo_id == tg.c.repo_id, sig_tag.c.name == cosign_name),
        )
        query = (
            select(
                tg.c.name,
                tg.c.digest,
                m.c.media_type,
                m.c.size,
                m.c.content,
                tg.c.updated_at,
                pushed_by,
                signed,
            )
            .join(m, and_(m.c.repo_id == tg.c.repo_id, m.c.digest == tg.c.digest))
            .where(tg.c.repo_id == repo_id)
        )
        if after is not None:
            query = query.where(tg.c.name > after)
        query = query.order_by(tg.c.name).limit(limit)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            TagRow(name, digest, mtype, int(size), bytes(content), float(at), actor, bool(sig))
            for name, digest, mtype, size, content, at, actor, sig in rows
        ]

    async def tag_count(self, repository: str) -> int:
        r, tg = t.repositories, t.tags
        query = (
            select(func.count())
            .select_from(tg)
            .join(r, r.c.id == tg.c.repo_id)
            .where(r.c.name == repository)
        )
        async with self.reader.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
