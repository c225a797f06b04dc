"""Tag lifecycle: immutable tags, and the tag history behind `trustyard tag history|restore`.

Immutable tags are rules of repository and tag patterns (shell-style, `fnmatch`: `*` also
crosses `/`). A tag matching a rule may be created and pushed again with the same digest, but
not moved to another digest nor deleted, except by an explicit administrator override (the CLI's
`--force`; the HTTP API has none, so no token can bypass a rule). The refusal is `DENIED` (403),
which Docker, podman and skopeo print with our message; Harbor answers its own `PRECONDITION`
(412), which clients show only as "unexpected status".
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase

import structlog

from trustyard.metadata.base import MetadataStore
from trustyard.metadata.lifecycle_base import TagHistoryIndex, TagMove
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError

log = structlog.get_logger("trustyard.lifecycle")

# A manifest's last pull is written at most this often per process: retention counts in days.
PULL_WRITE_SECONDS = 3600.0
_PULL_MEMO_MAX = 100_000


@dataclass(frozen=True, slots=True)
class ImmutableRule:
    repository: str  # pattern
    tags: tuple[str, ...]  # patterns

    def matches(self, repository: str, tag: str) -> bool:
        return fnmatchcase(repository, self.repository) and any(
            fnmatchcase(tag, p) for p in self.tags
        )

    def describe(self) -> str:
        return f'{{repository = "{self.repository}", tags = {list(self.tags)}}}'.replace("'", '"')


class TagLifecycle:
    """Checks tag changes against the immutable rules; reads the tag history."""

    def __init__(
        self,
        metadata: MetadataStore,
        history: TagHistoryIndex,
        immutable: tuple[ImmutableRule, ...] = (),
        *,
        track_pulls: bool = False,
    ) -> None:
        self.metadata = metadata
        self.history = history
        self.immutable = immutable
        self.track_pulls = track_pulls  # only retention rules with keep_pulled_days need it
        self._pull_written: dict[tuple[str, str], float] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def pulled(self, repository: str, digest: Digest) -> None:
        """Note a pull: at most one write per manifest per hour, off the request's path (a
        pull never waits for the write lock, say behind a GC pass)."""
        if not self.track_pulls:
            return
        now, key = time.time(), (repository, str(digest))
        if now - self._pull_written.get(key, 0.0) < PULL_WRITE_SECONDS:
            return
        if len(self._pull_written) >= _PULL_MEMO_MAX:
            self._pull_written.clear()
        self._pull_written[key] = now
        task = asyncio.create_task(self._write_pull(key, now))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_pull(self, key: tuple[str, str], at: float) -> None:
        try:
            await self.history.record_pulls([(key[0], key[1], at)])
        except Exception as exc:  # a lost pull time only makes retention keep less; log it
            self._pull_written.pop(key, None)
            log.warning("pull_time_not_recorded", error=str(exc)[:300])

    def rule_for(self, repository: str, tag: str) -> ImmutableRule | None:
        return next((r for r in self.immutable if r.matches(repository, tag)), None)

    async def check_tag_changes(
        self, repository: str, tags: list[str], digest: Digest | None, *, force: bool = False
    ) -> None:
        """Refuse moving (or, with `digest` None, deleting) a tag an immutable rule covers.

        Only tags a rule matches cost a lookup, so pushes to other tags pay nothing.
        """
        if force:
            return
        for tag in tags:
            rule = self.rule_for(repository, tag)
            if rule is None:
                continue
            current = await self.metadata.get_manifest(repository, tag)
            if current is None or current.digest == digest:
                continue
            verb = "deleted" if digest is None else f"moved from {current.digest} to {digest}"
            raise RegistryError(
                ErrorCode.DENIED,
                f"tag {repository}:{tag} is immutable (lifecycle rule {rule.describe()}) and "
                f"cannot be {verb}; push a new tag instead (an administrator may override with "
                "`trustyard tag delete|restore --force`)",
                detail={"repository": repository, "tag": tag, "rule": rule.describe()},
            )

    async def check_manifest_delete(
        self, repository: str, digest: Digest, *, force: bool = False
    ) -> None:
        """Deleting a manifest deletes its tags: refused when one of them is immutable."""
        if force or not self.immutable:
            return
        tags = await self.history.tags_of(repository, str(digest))
        await self.check_tag_changes(repository, tags, None)

    async def tag_history(self, repository: str, tag: str, limit: int = 1000) -> list[TagMove]:
        return await self.history.tag_history(repository, tag, limit)
