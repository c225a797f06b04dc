"""Tag lifecycle ports: the history of tag moves, the tags naming a manifest, last pulls and
what retention reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class TagMove(NamedTuple):
    """One change of a tag: created (old None), moved, or deleted (new None)."""

    repository: str
    tag: str
    old_digest: str | None
    new_digest: str | None
    actor: str | None
    at: float


class RetentionTag(NamedTuple):
    repository: str
    tag: str
    digest: str
    pushed_at: float  # when the tag last moved to this digest


@dataclass(frozen=True, slots=True)
class RetentionSnapshot:
    """What retention decides from, read at once (digests as text, keyed by repository)."""

    tags: list[RetentionTag]
    # (repository, digest) of manifests something refers to: referrers' subjects, simple
    # signatures' holders, index children
    signed: set[tuple[str, str]] = field(default_factory=set)
    children: set[tuple[str, str]] = field(default_factory=set)
    pulled: dict[tuple[str, str], float] = field(default_factory=dict)


class NamespaceUsage(Protocol):
    """Bytes a namespace holds: each distinct blob once, plus its manifests' bytes."""

    async def namespace_usage(self, namespace: str) -> int:
        """Usage of the repositories named `namespace` or `namespace/...`."""

    async def namespace_holds(self, namespace: str, digest: str) -> bool:
        """Whether a repository of the namespace already links blob `digest`."""

    async def usage_rows(self) -> list[tuple[str, str, int]]:
        """(repository, digest, size) of every blob link and manifest (`trustyard quota show`)."""


class TagHistoryIndex(Protocol):
    async def tag_history(self, repository: str, tag: str, limit: int) -> list[TagMove]:
        """The tag's moves, newest first, at most `limit`."""

    async def tags_of(self, repository: str, digest: str) -> list[str]:
        """The tags of `repository` pointing at `digest` (what deleting the manifest removes)."""

    async def record_pulls(self, pulls: list[tuple[str, str, float]]) -> None:
        """Remember (repository, digest, time) of pulls (callers throttle, see lifecycle.py)."""

    async def retention_snapshot(self) -> RetentionSnapshot: ...

    async def delete_tag_if(self, repository: str, tag: str, digest: str, actor: str) -> bool:
        """Delete the tag only if it still points at `digest` (a push since wins); recorded."""
