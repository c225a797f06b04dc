"""Read-model port for the web UI's pages: repository search and tag pages, keyset-paginated.

The registry's `CatalogIndex` lists names only; a page of the UI also needs each tag's manifest
(size, platforms), who moved it there (tag history) and whether anything signs it, in a handful
of indexed queries per page, whatever the repository's size. `metadata.browse_sql` implements it.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class TagRow(NamedTuple):
    """One tag of a tag page, with its manifest's row and the tag's last move."""

    name: str
    digest: str
    media_type: str
    manifest_size: int
    content: bytes  # the manifest's bytes (sizes and platforms are read from them)
    updated_at: float
    pushed_by: str | None  # actor of the tag's last move (tag history), None when unrecorded
    signed: bool  # a referrer, a simple signature or a cosign `sha256-<hex>.sig` tag exists


class BrowseIndex(Protocol):
    async def search_repositories(self, text: str, limit: int, after: str | None) -> list[str]:
        """Up to `limit` names of repositories holding manifests that contain `text`
        (case-insensitive; "" matches all), after `after`, lexically ordered."""

    async def tag_page(self, repository: str, limit: int, after: str | None) -> list[TagRow]:
        """Up to `limit` tags of `repository` after `after`, lexically ordered."""

    async def tag_count(self, repository: str) -> int: ...
