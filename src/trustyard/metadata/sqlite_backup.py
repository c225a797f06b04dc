"""Consistent copies of the embedded SQLite store, taken while the server writes to it.

SQLite's online backup API (stdlib `sqlite3.Connection.backup`) in one step: the copy runs
inside one read transaction, which in WAL mode never blocks the server's writers, so it is the
database as of one instant (a copy in many steps would restart whenever another process wrote).
Blocking calls: run them on a worker thread from async code.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

_SECRET_FILE_MODE = 0o600  # the store holds password hashes and encrypted keys
# Blobs some repository links: what a pull can ask for. A row no repository links (deleted,
# or quarantined by scrub) is GC's to remove and needs no bytes.
_LINKED_BLOBS = (
    "SELECT digest, size FROM blobs WHERE EXISTS "
    "(SELECT 1 FROM repo_blobs WHERE repo_blobs.digest = blobs.digest)"
)
_COUNTED = ("repositories", "manifests", "tags", "blobs")


class SnapshotError(RuntimeError):
    """The file is not a usable trustyard SQLite store; the message says why."""


@dataclass(frozen=True, slots=True)
class SnapshotContents:
    revision: str | None
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, size), linked ones
    counts: dict[str, int] = field(default_factory=dict)


def copy_database(source: Path, target: Path) -> None:
    """Copy `source` (live or not) to `target` as of one instant: written aside, then renamed.

    `target`'s stale WAL files go first, or SQLite would replay them over the new copy.
    """
    if not source.is_file():
        raise SnapshotError(f"{source} does not exist")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _SECRET_FILE_MODE)
    os.close(fd)
    try:
        src = sqlite3.connect(source, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        for suffix in ("-wal", "-shm"):
            target.with_name(target.name + suffix).unlink(missing_ok=True)
        os.replace(tmp, target)
    except sqlite3.Error as exc:
        raise SnapshotError(f"cannot copy {source}: {exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def read_contents(path: Path) -> SnapshotContents:
    """What a snapshot holds: schema revision, the blobs repositories link, a few row counts.

    Refuses a file that fails SQLite's integrity check (a truncated or damaged backup).
    """
    if not path.is_file():
        raise SnapshotError(f"{path} does not exist")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            check = db.execute("PRAGMA integrity_check").fetchone()
            if check is None or check[0] != "ok":
                raise SnapshotError(f"{path} fails SQLite's integrity check: {check}")
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
            blobs = [(str(d), int(s)) for d, s in db.execute(_LINKED_BLOBS)]
            counts = {
                table: int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608
                for table in _COUNTED
            }
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise SnapshotError(f"{path} is not a trustyard store: {exc}") from None
    return SnapshotContents(row[0] if row else None, sorted(blobs), counts)
