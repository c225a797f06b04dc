"""Tag lifecycle ports: the history of tag moves and the tags naming a manifest."""

from __future__ import annotations

from typing import NamedTuple, Protocol


class TagMove(NamedTuple):
    """One change of a tag: created (old None), moved, or deleted (new None)."""

    repository: str
    tag: str
    old_digest: str | None
    new_digest: str | None
    actor: str | None
    at: float


class TagHistoryIndex(Protocol):
    async def tag_history(self, repository: str, tag: str, limit: int) -> list[TagMove]:
        """The tag's moves, newest first, at most `limit`."""

    async def tags_of(self, repository: str, digest: str) -> list[str]:
        """The tags of `repository` pointing at `digest` (what deleting the manifest removes)."""
