"""Backup building blocks on real files: content-addressed blob copies, key-file modes, the
SQLite snapshot taken while another connection writes, and the backup.json gate."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.metadata.sqlite_backup import SnapshotError, copy_database, read_contents
from trustyard.oci.digest import Digest
from trustyard.registry import backup as bk
from trustyard.storage.filesystem import FilesystemStorage


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _store(root: Path, *blobs: bytes) -> FilesystemStorage:
    storage = FilesystemStorage(root, fsync=False, direct_io=False)
    for i, data in enumerate(blobs):
        upload = f"{i:032x}"
        await storage.create_upload(upload)
        await storage.append(upload, _chunks(data), 0, 0)
        await storage.commit(upload, Digest.of(data))
    return storage


async def test_blobs_copy_once_verified_and_restore_through_commit(tmp_path: Path) -> None:
    a, b = os.urandom(3000), os.urandom(5000)
    source = await _store(tmp_path / "src", a, b)
    wanted = [(Digest.of(a), len(a)), (Digest.of(b), len(b)), (Digest.of(b"gone"), 4)]
    dest = tmp_path / "backup"
    first = await bk.backup_blobs(source, wanted, dest)
    assert (first.copied, first.present, first.missing) == (2, 0, [Digest.of(b"gone")])
    assert bk.blob_path(dest, Digest.of(a)).read_bytes() == a
    second = await bk.backup_blobs(source, wanted[:2], dest)
    assert (second.copied, second.present, second.ok) == (0, 2, True)

    bk.blob_path(dest, Digest.of(b)).write_bytes(b"x" * len(b))  # damaged in the backup
    target = FilesystemStorage(tmp_path / "dst", fsync=False, direct_io=False)
    restored = await bk.restore_blobs(dest, wanted[:2], target)
    assert (restored.copied, restored.corrupt) == (1, [Digest.of(b)])
    assert await target.stat(Digest.of(b)) is None
    assert [u async for u, _ in target.uploads()] == []


async def test_a_corrupt_source_blob_is_not_backed_up(tmp_path: Path) -> None:
    data = os.urandom(2000)
    source = await _store(tmp_path / "src", data)
    source.blob_path(Digest.of(data)).write_bytes(b"y" * 1999)
    report = await bk.backup_blobs(source, [(Digest.of(data), 2000)], tmp_path / "backup")
    assert report.corrupt == [Digest.of(data)]
    assert not bk.blob_path(tmp_path / "backup", Digest.of(data)).exists()


def test_private_files_are_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "auth" / "token-signing").mkdir(parents=True)
    (data / "auth" / "token-signing" / "cert.pem").write_text("cert")
    (data / "trust").mkdir()
    (data / "trust" / "passphrase").write_text("secret")
    (data / "storage").mkdir()
    (data / "storage" / "x").write_text("not a key")
    copied = bk.copy_private_files(data, tmp_path / "out")
    assert copied == ["trust/passphrase", "auth/token-signing/cert.pem"]
    for rel in copied:
        assert stat.S_IMODE((tmp_path / "out" / rel).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "out" / "auth" / "token-signing").stat().st_mode) == 0o700
    assert not (tmp_path / "out" / "storage").exists()


def test_snapshot_while_another_connection_writes(tmp_path: Path) -> None:
    live = tmp_path / "live.db"
    db = sqlite3.connect(live, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    for ddl in (
        "CREATE TABLE alembic_version (version_num TEXT)",
        "CREATE TABLE repositories (id INTEGER PRIMARY KEY, name TEXT)",
        "CREATE TABLE manifests (digest TEXT)",
        "CREATE TABLE tags (name TEXT)",
        "CREATE TABLE blobs (digest TEXT PRIMARY KEY, size INTEGER)",
        "CREATE TABLE repo_blobs (repo_id INTEGER, digest TEXT)",
    ):
        db.execute(ddl)
    db.execute("INSERT INTO alembic_version VALUES ('0003')")
    db.commit()
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            digest = f"sha256:{n:064x}"
            db.execute("INSERT INTO blobs VALUES (?, ?)", (digest, n))
            db.execute("INSERT INTO repo_blobs VALUES (1, ?)", (digest,))
            db.commit()
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(5):
            copy_database(live, tmp_path / "copy.db")
            contents = read_contents(tmp_path / "copy.db")
            assert contents.revision == "0003"
            # Every snapshot is one instant: n rows 0..n-1, never a torn pair.
            assert [size for _, size in contents.blobs] == list(range(len(contents.blobs)))
    finally:
        stop.set()
        writer.join()
        db.close()
    assert stat.S_IMODE((tmp_path / "copy.db").stat().st_mode) == 0o600
    assert not list(tmp_path.glob(".copy.db*"))


def test_unusable_snapshots_and_targets(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError):
        read_contents(tmp_path / "absent.db")
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(SnapshotError):
        read_contents(tmp_path / "junk.db")
    with pytest.raises(ValueError, match="interrupted"):
        bk.read_manifest(tmp_path)
    bk.write_manifest(tmp_path, {"blobs": 0})
    assert bk.read_manifest(tmp_path)["format"] == bk.FORMAT
    assert bk.is_reusable_target(tmp_path / "new")
    (tmp_path / "mine.txt").write_text("x")
    assert not bk.is_reusable_target(tmp_path)
