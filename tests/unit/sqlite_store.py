"""A metadata store on a real SQLite file, shared by the writer tests (group commit, units)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.metadata.sql import SqlMetadataStore
from trustyard.wiring import open_database


@pytest.fixture(name="store")
async def store_fixture(tmp_path: Path) -> AsyncIterator[SqlMetadataStore]:
    """Import it as `store_fixture`; tests ask for `store`."""
    database = await open_database(tmp_path / "metadata.db", create=True)
    yield database.metadata
    await database.close()


def repository_of(upload_id: str) -> str:
    """The repository the writer tests put upload `upload_id` in (seven, spread by id)."""
    return f"team/app{int(upload_id, 16) % 7}"


async def assert_uploads(store: SqlMetadataStore, upload_ids: list[str]) -> None:
    """Every upload row is there, in its repository: no unit of a batch was lost."""
    for upload_id in upload_ids:
        record = await store.get_upload(upload_id)
        assert record is not None and record.repository == repository_of(upload_id)
