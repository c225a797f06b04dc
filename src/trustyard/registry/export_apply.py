"""Applying an export plan to a directory: incrementally, atomically, sparing foreign files.

Files whose content is already there are left alone, files of an earlier export that left the
plan are removed, and files we never wrote are never touched (`.trustyard-export.json` records
what we wrote, every path before it is written, so an interrupted run is cleaned up by the
next). Every file appears by rename, so a server never serves half of one; blobs come first,
tags and lists last, so a tag never names a manifest whose blobs are not there yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import anyio

from trustyard.oci.digest import Digest
from trustyard.registry.export import Entry, ExportError, ExportPlan
from trustyard.storage.base import BlobStore

STATE = ".trustyard-export.json"
_STATE_FORMAT = 1


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@dataclass
class ExportSummary:
    written: int = 0
    linked: int = 0
    copied: int = 0  # blobs streamed: another filesystem, or a store without local files
    unchanged: int = 0
    removed: int = 0

    def line(self) -> str:
        return (
            f"{self.written} written, {self.linked} linked, {self.copied} copied, "
            f"{self.unchanged} unchanged, {self.removed} removed"
        )


def check_target(dest: Path, data_dir: Path) -> None:
    """The export is published: it must neither sit in the data dir nor contain it (keys)."""
    d, data = dest.resolve(), data_dir.resolve()
    if d == data or d.is_relative_to(data):
        raise ExportError(f"{dest} is inside the data dir {data_dir}; export somewhere else")
    if data.is_relative_to(d):
        raise ExportError(
            f"{dest} contains the data dir {data_dir}: a web server would publish its keys"
        )


def _target(dest: Path, relative: str) -> Path:
    """Where a planned file goes; names are validated upstream, this makes escaping impossible."""
    path = dest / relative
    parts = relative.split("/")
    if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ExportError(f"refusing to write {relative!r}: it would leave {dest}")
    return path


def read_state(dest: Path) -> dict[str, str]:
    """What an earlier export wrote here (path -> identity); {} for a new directory."""
    record = dest / STATE
    try:
        raw = json.loads(record.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        raise ExportError(
            f"{record} is not an export record; remove it or choose another directory"
        ) from None
    files = raw.get("files") if isinstance(raw, dict) else None
    if (
        not isinstance(raw, dict)
        or raw.get("format") != _STATE_FORMAT
        or not isinstance(files, dict)
    ):
        raise ExportError(f"{record} is not an export record of this version")
    for relative in files:
        _target(dest, str(relative))  # an edited record must not make us delete elsewhere
    return {str(k): str(v) for k, v in files.items()}


def _write_state(dest: Path, files: dict[str, str]) -> None:
    _atomic_bytes(
        dest / STATE, _json({"format": _STATE_FORMAT, "files": dict(sorted(files.items()))})
    )


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _atomic_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _same_bytes(path: Path, entry: Entry) -> bool:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    except OSError:
        return False


def _same_blob(path: Path, entry: Entry, source: Path | None) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    if st.st_size != entry.size:
        return False
    if source is None:
        return True  # streamed from an object store: the size (and our record) must do
    with contextlib.suppress(OSError):
        src = source.stat()
        if (src.st_dev, src.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False  # a copy (or a replaced file): check it by linking or copying again


def _link_blob(path: Path, source: Path | None) -> bool:
    """Hard-link the store's file into place; False when it must be streamed instead."""
    if source is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        return False  # another filesystem (EXDEV) or no link support
    os.replace(tmp, path)
    tmp.unlink(missing_ok=True)  # a rename onto the same inode leaves the old name
    return True


async def _stream_blob(path: Path, blob: Digest, blobs: BlobStore) -> None:
    """Copy a blob from the store (an object store, or another filesystem), checking it."""
    await anyio.to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
    tmp = _tmp(path)
    digester = hashlib.sha256()
    try:
        async with await anyio.open_file(tmp, "wb") as out:
            async for chunk in blobs.read(blob):
                digester.update(chunk)
                await out.write(chunk)
        if digester.hexdigest() != blob.hex:
            raise ExportError(
                f"blob {blob} in the store does not match its digest; run `trustyard scrub`"
            )
    except BaseException:
        await anyio.Path(tmp).unlink(missing_ok=True)  # nothing half-written stays behind
        raise
    await anyio.to_thread.run_sync(os.chmod, tmp, 0o644)
    await anyio.to_thread.run_sync(os.replace, tmp, path)


def _prune(dest: Path, path: Path) -> None:
    """Remove directories the removal left empty, up to (not including) the export root."""
    parent = path.parent
    while parent != dest and parent.is_relative_to(dest):
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def _order(entry: Entry) -> int:
    """Blobs; manifests by digest and other files; then tags and TUF snapshots; then lists and
    TUF timestamps: whatever a file names is in place before it."""
    name = entry.path.rsplit("/", 1)[-1]
    if entry.blob is not None:
        return 0
    if entry.path.endswith("/tags/list") or entry.path == "v2/_catalog":
        return 3
    if "/_trust/tuf/" in entry.path and "/" not in entry.path.split("/_trust/tuf/", 1)[1]:
        return {"snapshot": 2, "timestamp": 3}.get(name.split(".")[0], 1)
    if entry.digest_header and "/manifests/" in entry.path and ":" not in name:
        return 2
    return 1


def _begin(
    dest: Path, wanted: dict[str, Entry], blobs: BlobStore, summary: ExportSummary
) -> tuple[dict[str, str], list[Entry]]:
    """Check paths, record them, link or keep the blobs; returns the earlier record and the
    blobs still to stream."""
    previous = read_state(dest)
    for relative in wanted:
        _target(dest, relative)
    dest.mkdir(parents=True, exist_ok=True)
    # Record every path before writing it: an interrupted run is cleaned up by the next one.
    _write_state(dest, {**previous, **{p: previous.get(p, "") for p in wanted}})
    to_stream = []
    for entry in sorted(wanted.values(), key=lambda e: e.path):
        if entry.blob is None:
            continue
        path, source = _target(dest, entry.path), blobs.local_path(entry.blob)
        if previous.get(entry.path) == entry.identity and _same_blob(path, entry, source):
            summary.unchanged += 1
        elif _link_blob(path, source):
            summary.linked += 1
        else:
            to_stream.append(entry)
    return previous, to_stream


def _finish(
    dest: Path, wanted: dict[str, Entry], previous: dict[str, str], summary: ExportSummary
) -> None:
    """Write the other files (manifests by digest, then tags, then lists), then remove what
    left the plan, then the final record."""
    for entry in sorted(wanted.values(), key=lambda e: (_order(e), e.path)):
        if entry.blob is not None:
            continue
        path = _target(dest, entry.path)
        if previous.get(entry.path) == entry.identity and _same_bytes(path, entry):
            summary.unchanged += 1
        else:
            assert entry.data is not None
            _atomic_bytes(path, entry.data)
            summary.written += 1
    for relative in sorted(previous.keys() - wanted.keys()):
        path = _target(dest, relative)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            summary.removed += 1
        _prune(dest, path)
    _write_state(dest, {p: e.identity for p, e in wanted.items()})


async def apply_export(
    plan: ExportPlan, dest: Path, blobs: BlobStore, extra: list[Entry]
) -> ExportSummary:
    """Make `dest` hold the plan (and `extra`, the server configs); see the module docstring."""
    summary = ExportSummary()
    wanted = {**plan.entries, **{e.path: e for e in extra}}
    previous, to_stream = await anyio.to_thread.run_sync(_begin, dest, wanted, blobs, summary)
    for entry in to_stream:
        assert entry.blob is not None
        await _stream_blob(_target(dest, entry.path), entry.blob, blobs)
        summary.copied += 1
    await anyio.to_thread.run_sync(_finish, dest, wanted, previous, summary)
    return summary
