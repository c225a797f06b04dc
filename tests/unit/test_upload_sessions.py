"""Upload sessions across two workers sharing one data directory (real SQLite + filesystem).

Each `Uploads` remembers which repository a session belongs to (registry/uploads.py); these
pin that the memory never keeps a finished, cancelled or expired session alive elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.gc import expire_uploads
from trustyard.registry.uploads import Uploads
from trustyard.storage.filesystem import FilesystemStorage
from trustyard.wiring import open_cache, open_database


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[tuple[Uploads, Uploads]]:
    metadata = (await open_database(tmp_path / "metadata.db", create=True)).metadata
    pair = tuple(
        Uploads(FilesystemStorage(tmp_path / "blobs"), metadata, open_cache(None), max_blob_bytes=0)
        for _ in range(2)
    )
    yield pair  # type: ignore[misc]
    await metadata.close()


async def _unknown(uploads: Uploads, name: str, upload_id: str) -> None:
    with pytest.raises(RegistryError) as err:
        await uploads.append(name, upload_id, body(b"more"), None, None)
    assert err.value.code is ErrorCode.BLOB_UPLOAD_UNKNOWN


async def test_a_session_is_bound_to_its_repository_on_every_worker(
    workers: tuple[Uploads, Uploads],
) -> None:
    a, b = workers
    upload_id = await a.start("team/app")
    assert await b.append("team/app", upload_id, body(b"abc"), None, None) == 3
    for worker in (a, b):  # remembered or not, another repository never reaches it
        await _unknown(worker, "other/app", upload_id)
    assert await a.status("team/app", upload_id) == 3


@pytest.mark.parametrize("end", ["finish", "cancel", "expire"])
async def test_an_ended_session_is_unknown_on_the_worker_that_remembers_it(
    workers: tuple[Uploads, Uploads], end: str
) -> None:
    a, b = workers
    upload_id = await a.start("team/app")
    await b.append("team/app", upload_id, body(b"abc"), None, None)  # b remembers it now
    if end == "finish":
        await a.finish("team/app", upload_id, str(Digest.of(b"abc")), None, None, None)
    elif end == "cancel":
        await a.cancel("team/app", upload_id)
    else:
        assert await expire_uploads(a.storage, a.metadata, max_age_seconds=-1) == [upload_id]
    for worker in (a, b):
        await _unknown(worker, "team/app", upload_id)
        with pytest.raises(RegistryError):
            await worker.status("team/app", upload_id)


async def test_a_forged_upload_id_reaches_neither_metadata_nor_disk(
    workers: tuple[Uploads, Uploads],
) -> None:
    a, _ = workers
    for forged in ("../../etc/passwd", "0" * 32, os.urandom(16).hex().upper()):
        await _unknown(a, "team/app", forged)
