"""The web UI's read model (`metadata.browse_sql`) on SQLite and PostgreSQL: search with LIKE
wildcards taken as text, keyset pages of tags with who moved them and whether anything signs them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.contracts.test_metadata_contract import link_image_blobs, manifest_bytes
from trustyard.metadata.browse_sql import SqlBrowseStore
from trustyard.oci.manifest import parse_manifest
from trustyard.wiring import Database, open_database


@pytest.fixture
async def db(target: Path | str) -> AsyncIterator[Database]:
    database = await open_database(target, create=True)
    yield database
    await database.close()


async def test_search_and_tag_pages(db: Database) -> None:
    meta = db.metadata
    for repo in ("team/app", "team/a_b", "other/x"):
        await link_image_blobs(meta, repo)
    raws = [manifest_bytes(f"s{i}") for i in range(5)]
    manifests = [parse_manifest(raw, None) for raw in raws]
    for i, (m, raw) in enumerate(zip(manifests, raws, strict=True)):
        await meta.put_manifest("team/app", m, raw, [f"t{i}"], actor="alice" if i else None)
    await meta.put_manifest("team/a_b", manifests[0], raws[0], ["v1"])
    await meta.put_manifest("other/x", manifests[0], raws[0], ["v1"])
    # A cosign signature tag for t1's digest marks t1 signed.
    sig_tag = str(manifests[1].digest).replace(":", "-") + ".sig"
    await meta.put_manifest("team/app", manifests[4], raws[4], [sig_tag])

    browse = SqlBrowseStore(db.reader)
    assert await browse.search_repositories("team", 10, None) == ["team/a_b", "team/app"]
    assert await browse.search_repositories("a_b", 10, None) == ["team/a_b"]  # `_` is text
    assert await browse.search_repositories("%", 10, None) == []
    assert await browse.search_repositories("", 2, None) == ["other/x", "team/a_b"]
    assert await browse.search_repositories("", 2, "team/a_b") == ["team/app"]

    first = await browse.tag_page("team/app", 2, None)
    assert [r.name for r in first] == [sig_tag, "t0"]
    page = await browse.tag_page("team/app", 3, "t0")
    assert [r.name for r in page] == ["t1", "t2", "t3"]
    by_name = {r.name: r for r in await browse.tag_page("team/app", 100, None)}
    assert by_name["t1"].digest == str(manifests[1].digest)
    assert by_name["t1"].content == raws[1] and by_name["t1"].manifest_size == len(raws[1])
    assert by_name["t1"].signed and not by_name["t2"].signed
    assert by_name["t2"].pushed_by == "alice"
    assert await browse.tag_count("team/app") == 6
    assert await browse.tag_page("nothing/here", 10, None) == []
    assert await browse.tag_count("nothing/here") == 0
