"""The migration port: what `registry.migration` needs of a metadata store to merge it into
another by natural keys, and the records the merge reports. Owned by the use case, implemented
by `metadata.copy.SqlTables`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, Self


@dataclass
class Tally:
    """One kind of row on its way over: how many were new, already there, replaced."""

    copied: int = 0
    present: int = 0
    overwritten: int = 0


@dataclass
class CopyResult:
    """What `Tables.copy_to` did: per kind of row, notes (kept target rows), problems."""

    tallies: dict[str, Tally] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def tally(self, kind: str) -> Tally:
        return self.tallies.setdefault(kind, Tally())


class Tables(Protocol):
    """What a migration needs of a metadata store beyond `MetadataStore`: a merge by natural keys.

    Rows are matched by what they mean (repository name, manifest digest, tag name, GUN + role +
    version, account name), never by numeric ids, so the target may already hold content.
    Implemented for the SQL stores by `metadata.copy.SqlTables`; the composition root hands one
    in for each side.
    """

    async def blob_digests(self) -> set[str]:
        """Every blob digest the metadata knows (text form)."""

    async def conflicts(self, target: Self, *, overwrite_tags: bool) -> list[str]:
        """What the merge would have to decide (a tag or trust data differing on both sides)."""

    async def copy_to(self, target: Self, *, overwrite_tags: bool) -> CopyResult:
        """Merge every row into `target`, one transaction per repository and per GUN."""

    async def verify(self, target: Self) -> list[str]:
        """Problems: source rows (tags, manifests, signatures, trust files) the target lacks."""

    def manifest_rows(self) -> AsyncIterator[tuple[str, bytes, str]]:
        """(digest, exact bytes, media type) of every stored manifest, streamed."""
