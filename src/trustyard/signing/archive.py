"""Import an image archive (OCI archive or `docker save`) into REGISTRY_DIR as an OCI layout.

ir-sign simply untars the archive into REGISTRY_DIR/APP_NAME, so a `docker save` tarball only
works there when it already carries an OCI layout (Docker >= 25 writes both); an older or
skopeo-made docker-archive (manifest.json, <hex>.json, <hex>.tar) gave no usable image. Here:
  * the tar is read once, in stream mode, in constant memory; every regular file goes to a flat
    scratch file under a name we choose, hashed while it is written, so no archive path ever
    becomes a filesystem path and traversal or link tricks cannot write outside the import;
  * entries that are absolute, climb out with `..`, or are links pointing outside the archive are
    refused outright (so are devices, fifos and duplicate names), as are corrupt or cut tars;
  * an archive with index.json + oci-layout is taken as an OCI layout (other files, such as
    Docker's manifest.json, are dropped), each blob checked against its digest; otherwise a
    docker-archive manifest.json is converted: blobs stored by digest, one OCI manifest per image,
    index.json entries named like Docker >= 25 does (ref name = tag, io.containerd.image.name);
  * the import is built in a hidden sibling directory, signed there by the caller, and renamed
    to REGISTRY_DIR/APP_NAME only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import secrets
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from trustyard.signing.errors import ArchiveError, LayoutError
from trustyard.signing.fileio import fsync_dir, write_atomic
from trustyard.signing.layout import (
    CONTAINERD_NAME,
    INDEX_FILE,
    LAYOUT_FILE,
    MAX_JSON,
    OCI_CONFIG,
    OCI_MANIFEST,
    REF_NAME,
    Layout,
    digest_of,
    dumps,
    init_layout,
    parse_json,
)

R = TypeVar("R")
Progress = Callable[[int], None]
_CHUNK = 1 << 20
_MAX_LINK_HOPS = 16
_BLOB_RE = re.compile(r"^blobs/(sha256/[a-f0-9]{64}|sha512/[a-f0-9]{128})$")
_LAYER_TYPES = {
    b"\x1f\x8b": "application/vnd.oci.image.layer.v1.tar+gzip",
    b"\x28\xb5\x2f\xfd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass
class _Entry:
    """A regular file from the archive, already on disk in the scratch directory."""

    tmp: Path
    size: int
    digest: str  # sha256, or sha512 for blobs/sha512/…
    head: bytes


class _Counting:
    """A read-only file wrapper that reports bytes read (drives the progress bar)."""

    def __init__(self, raw: BinaryIO, progress: Progress | None) -> None:
        self._raw, self._progress = raw, progress

    def read(self, size: int = -1) -> bytes:
        data = self._raw.read(size)
        if self._progress is not None and data:
            self._progress(len(data))
        return data


def default_app_name(tar_path: Path) -> str:
    """ir-sign's default: the file name without its extension (nginx.tar → nginx)."""
    name = tar_path.name
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return tar_path.stem or name


def check_app_name(app: str) -> None:
    if not app or app.startswith(".") or "/" in app or "\\" in app or "\x00" in app:
        raise ArchiveError(f"invalid app name {app!r}: one path component, not starting with '.'")


def _clean(name: str, what: str) -> str:
    """An archive path, normalised; refuse anything that would leave the archive root."""
    if "\x00" in name or name.startswith("/"):
        raise ArchiveError(f"unsafe entry {what} {name!r}: absolute path")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../"):
        raise ArchiveError(f"unsafe entry {what} {name!r}: path traversal outside the archive")
    return "" if norm == "." else norm


def _read_tar(
    tar_path: Path, scratch: Path, progress: Progress | None
) -> tuple[dict[str, _Entry], dict[str, str]]:
    files: dict[str, _Entry] = {}
    links: dict[str, str] = {}
    try:
        raw = tar_path.open("rb")
    except OSError as exc:
        raise ArchiveError(f"cannot read {tar_path}: {exc.strerror or exc}") from None
    try:
        with raw, tarfile.open(fileobj=_Counting(raw, progress), mode="r|*") as tar:  # type: ignore[call-overload]
            for member in tar:
                name = _clean(member.name, "")
                if member.isdir():
                    continue
                if name in files or name in links or not name:
                    raise ArchiveError(f"duplicate or empty entry {member.name!r} in the archive")
                if member.issym():
                    target = posixpath.join(posixpath.dirname(name), member.linkname)
                    links[name] = _clean(target, f"{member.name} ->")
                elif member.islnk():
                    links[name] = _clean(member.linkname, f"{member.name} =>")
                elif member.isfile():
                    src = tar.extractfile(member)
                    assert src is not None
                    files[name] = _store(src, scratch / str(len(files)), name)
                else:
                    raise ArchiveError(f"unsupported entry {member.name!r} (device, fifo, …)")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{tar_path} is corrupt or truncated ({exc})") from None
    return files, links


def _store(src: BinaryIO, tmp: Path, name: str) -> _Entry:
    h = hashlib.sha512() if name.startswith("blobs/sha512/") else hashlib.sha256()
    size, head = 0, b""
    with tmp.open("xb") as out:
        while chunk := src.read(_CHUNK):
            if not head:
                head = chunk[:4]
            h.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return _Entry(tmp, size, f"{h.name}:{h.hexdigest()}", head)


def _resolve(name: str, files: dict[str, _Entry], links: dict[str, str]) -> _Entry | None:
    for _ in range(_MAX_LINK_HOPS):
        if name in files:
            return files[name]
        if name not in links:
            return None
        name = links[name]
    raise ArchiveError(f"link loop at {name!r} in the archive")


def _place(entry: _Entry, dest: Path) -> None:
    """Move (or, if already moved, hard-link) a scratch file to its final place."""
    if dest.exists():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    if entry.tmp.exists():
        os.replace(entry.tmp, dest)
        entry.tmp = dest
    else:
        os.link(entry.tmp, dest)


def _small_json(entry: _Entry, what: str) -> Any:
    if entry.size > MAX_JSON:
        raise ArchiveError(f"{what} is {entry.size} bytes, over the {MAX_JSON} byte limit")
    try:
        return parse_json(b'{"v":' + entry.tmp.read_bytes() + b"}", what)["v"]
    except LayoutError as exc:
        raise ArchiveError(f"archive {exc}") from None


def _build_oci(files: dict[str, _Entry], links: dict[str, str], dest: Path) -> None:
    for name in [*files, *links]:
        if not _BLOB_RE.match(name):
            continue
        entry = _resolve(name, files, links)
        if entry is None:
            raise ArchiveError(f"archive link {name!r} points to a missing entry")
        if entry.digest != name[len("blobs/") :].replace("/", ":", 1):
            raise ArchiveError(f"archive blob {name} does not match its digest (corrupt)")
        _place(entry, dest / name)
    for name in (LAYOUT_FILE, INDEX_FILE):
        entry = _resolve(name, files, links)
        assert entry is not None
        _place(entry, dest / name)


def _tag_of(repo_tag: str) -> str:
    _repo, sep, tag = repo_tag.rpartition(":")
    return tag if sep and "/" not in tag else "latest"


def _build_docker(files: dict[str, _Entry], links: dict[str, str], dest: Path) -> None:
    doc = _small_json(files["manifest.json"], "manifest.json")
    if not isinstance(doc, list) or not doc:
        raise ArchiveError("archive manifest.json is not a non-empty list of images")
    init_layout(dest)
    top: list[dict[str, Any]] = []
    for image in doc:
        if not isinstance(image, dict) or not isinstance(image.get("Config"), str):
            raise ArchiveError(f"archive manifest.json has a malformed image entry: {image!r}")
        layers = image.get("Layers", [])
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError("archive manifest.json has a malformed Layers list")
        config = _docker_blob(image["Config"], files, links, dest, OCI_CONFIG)
        manifest = dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config,
                "layers": [_docker_blob(x, files, links, dest, None) for x in layers],
            }
        )
        digest = digest_of(manifest)
        write_atomic(dest / "blobs" / "sha256" / digest.partition(":")[2], manifest)
        desc = {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}
        tags = [t for t in image.get("RepoTags") or [] if isinstance(t, str)]
        top.extend(
            {**desc, "annotations": {CONTAINERD_NAME: t, REF_NAME: _tag_of(t)}} for t in tags
        )
        if not tags:
            top.append(desc)
    write_atomic(dest / INDEX_FILE, dumps({"schemaVersion": 2, "manifests": top}))


def _docker_blob(
    name: str, files: dict[str, _Entry], links: dict[str, str], dest: Path, media: str | None
) -> dict[str, Any]:
    entry = _resolve(_clean(name, "in manifest.json"), files, links)
    if entry is None:
        raise ArchiveError(f"archive manifest.json names {name!r}, which the archive lacks")
    if not entry.digest.startswith("sha256:"):
        raise ArchiveError(f"archive entry {name!r} has an unusable digest")
    _place(entry, dest / "blobs" / "sha256" / entry.digest.partition(":")[2])
    media = media or _LAYER_TYPES.get(entry.head[:2]) or _LAYER_TYPES.get(entry.head[:4])
    return {
        "mediaType": media or "application/vnd.oci.image.layer.v1.tar",
        "digest": entry.digest,
        "size": entry.size,
    }


def extract_archive(tar_path: Path, dest: Path, progress: Progress | None = None) -> str:
    """Unpack `tar_path` into the new directory `dest` as a checked OCI layout.

    Returns 'oci' or 'docker' (the kind of archive). `dest` must not exist yet.
    """
    dest.mkdir()
    scratch = dest / ".scratch"
    scratch.mkdir()
    try:
        files, links = _read_tar(tar_path, scratch, progress)
        has = {n for n in [*files, *links] if _resolve(n, files, links) is not None}
        if {INDEX_FILE, LAYOUT_FILE} <= has:
            kind = "oci"
            _build_oci(files, links, dest)
        elif "manifest.json" in files:
            kind = "docker"
            _build_docker(files, links, dest)
        else:
            raise ArchiveError(
                f"{tar_path} holds neither an OCI layout (index.json, oci-layout) nor a "
                "docker save manifest.json (is it truncated?)"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    try:
        Layout(dest).check_complete()
    except LayoutError as exc:
        raise ArchiveError(f"{tar_path} is incomplete or inconsistent: {exc}") from None
    return kind


def import_archive(
    tar_path: Path,
    registry_dir: Path,
    app: str,
    then: Callable[[Path], R],
    progress: Progress | None = None,
) -> R:
    """Extract into a hidden staging directory, run `then` on it, and publish it as APP.

    REGISTRY_DIR/APP must not exist yet (as with ir-sign). If extraction or `then` fails, the
    staging directory is removed and REGISTRY_DIR is left exactly as it was.
    """
    check_app_name(app)
    if not registry_dir.is_dir():
        raise ArchiveError(f"registry directory {registry_dir} does not exist")
    target = registry_dir / app
    if target.exists() or target.is_symlink():
        raise ArchiveError(f"{target} already exists; choose another app name (-a) or remove it")
    staging = registry_dir / f".{app}.importing-{secrets.token_hex(6)}"
    try:
        extract_archive(tar_path, staging, progress)
        result = then(staging)
        os.rename(staging, target)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
        raise
    fsync_dir(registry_dir)
    return result
