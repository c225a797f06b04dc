"""An OCI image layout on disk (index.json, oci-layout, blobs/<alg>/<hex>), as ir-sign edits it.

Only JSON documents (indexes, manifests, the config) are ever read; layers are checked by size
with a stat, never read, so signing costs the same for a 10 KiB and a 10 GiB image. Edits are
copy-on-write: new blobs are written first and index.json is replaced last, atomically, so a
failure at any point leaves the layout as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trustyard.oci import jsonbounds
from trustyard.signing.errors import LayoutError, ReferenceNotFoundError
from trustyard.signing.fileio import fsync_dir, write_atomic

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
LAYOUT_FILE = "oci-layout"
INDEX_FILE = "index.json"
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
MAX_JSON = 4 << 20
_MAX_DEPTH = 8
_CHUNK = 1 << 20
DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")

Json = dict[str, Any]


def dumps(doc: Json) -> bytes:
    """Compact, key-order-preserving JSON: the bytes whose digest names the document."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def check_digest(value: object, what: str) -> str:
    if not isinstance(value, str) or not DIGEST_RE.match(value):
        raise LayoutError(f"{what}: {value!r} is not a sha256/sha512 digest")
    return value


def parse_json(data: bytes, what: str) -> Json:
    try:
        doc = jsonbounds.loads(data, what=what)
    except jsonbounds.JSONBoundsError as exc:
        raise LayoutError(str(exc)) from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{what} is not a JSON object")
    return doc


def descriptors(doc: Json, what: str) -> list[Json]:
    """The `manifests` list of an index, each entry checked to be a usable descriptor."""
    items = doc.get("manifests")
    if not isinstance(items, list):
        raise LayoutError(f"{what} has no manifests list")
    for d in items:
        if not isinstance(d, dict) or not isinstance(d.get("size"), int):
            raise LayoutError(f"{what} has a malformed descriptor: {d!r}")
        check_digest(d.get("digest"), what)
    return items


def names(desc: Json) -> set[str]:
    """Names a top-level descriptor answers to: its ref name and its containerd image name."""
    ann = desc.get("annotations") or {}
    out = {v for k, v in ann.items() if k in (REF_NAME, CONTAINERD_NAME) and isinstance(v, str)}
    for full in list(out):
        for prefix in ("docker.io/library/", "docker.io/"):
            if full.startswith(prefix):
                out.add(full[len(prefix) :])
    return out


class Layout:
    """One image layout directory (REGISTRY_DIR/APP_NAME)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        if not root.is_dir():
            raise LayoutError(f"{root} is not a directory")
        try:
            marker = parse_json((root / LAYOUT_FILE).read_bytes(), f"{root}/{LAYOUT_FILE}")
        except OSError:
            raise LayoutError(f"{root} is not an OCI image layout (no {LAYOUT_FILE})") from None
        if marker.get("imageLayoutVersion") != "1.0.0":
            raise LayoutError(f"{root}/{LAYOUT_FILE}: unsupported layout version")

    # -- reading -------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        alg, _, hexpart = check_digest(digest, "descriptor").partition(":")
        return self.root / "blobs" / alg / hexpart

    def read_index(self) -> Json:
        path = self.root / INDEX_FILE
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LayoutError(f"cannot read {path}: {exc.strerror or exc}") from None
        doc = parse_json(data, str(path))
        descriptors(doc, str(path))
        return doc

    def read_blob(self, desc: Json, limit: int = MAX_JSON) -> bytes:
        """A small blob's bytes, checked against the descriptor's digest and size."""
        digest = check_digest(desc.get("digest"), "descriptor")
        path = self.blob_path(digest)
        try:
            size = path.stat().st_size
            if size > limit:
                raise LayoutError(f"blob {digest} is {size} bytes, over the {limit} byte limit")
            data = path.read_bytes()
        except FileNotFoundError:
            raise LayoutError(f"blob {digest} is missing from {self.root}") from None
        except OSError as exc:
            raise LayoutError(f"cannot read blob {digest}: {exc.strerror or exc}") from None
        if digest_of(data, digest.partition(":")[0]) != digest:
            raise LayoutError(f"blob {digest} does not match its digest (tampered or corrupt)")
        if desc.get("size") is not None and desc.get("size") != len(data):
            raise LayoutError(f"blob {digest} is {len(data)} bytes, descriptor says {desc['size']}")
        return data

    def read_json(self, desc: Json) -> Json:
        return parse_json(self.read_blob(desc), f"blob {desc.get('digest')}")

    def hash_blob(self, desc: Json, also: str) -> bytes:
        """Stream a blob once: verify its digest and size, return its `also` hash (e.g. sha384)."""
        digest = check_digest(desc.get("digest"), "descriptor")
        own = hashlib.new(digest.partition(":")[0])
        extra = hashlib.new(also)
        size = 0
        try:
            with self.blob_path(digest).open("rb") as f:
                while chunk := f.read(_CHUNK):
                    own.update(chunk)
                    extra.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise LayoutError(f"blob {digest} is missing from {self.root}") from None
        if f"{digest.partition(':')[0]}:{own.hexdigest()}" != digest:
            raise LayoutError(f"blob {digest} does not match its digest (tampered or corrupt)")
        if desc.get("size") != size:
            raise LayoutError(f"blob {digest} is {size} bytes, descriptor says {desc.get('size')}")
        return extra.digest()

    def kind(self, desc: Json) -> str:
        """'index', 'manifest' or 'other' for a descriptor (by media type, else by content)."""
        media = desc.get("mediaType")
        if media in INDEX_TYPES:
            return "index"
        if media in MANIFEST_TYPES:
            return "manifest"
        if media is None:
            doc = self.read_json(desc)
            media = doc.get("mediaType")
            if media in INDEX_TYPES or (media is None and "manifests" in doc):
                return "index"
            if media in MANIFEST_TYPES or (media is None and "config" in doc):
                return "manifest"
        return "other"

    def walk(self, doc: Json | None = None, depth: int = 0) -> Iterator[Json]:
        """Every descriptor reachable from index.json through nested indexes."""
        if depth > _MAX_DEPTH:
            raise LayoutError(f"{self.root}: indexes nested deeper than {_MAX_DEPTH}")
        doc = self.read_index() if doc is None else doc
        for desc in descriptors(doc, "index"):
            yield desc
            if self.kind(desc) == "index":
                yield from self.walk(self.read_json(desc), depth + 1)

    # -- resolving -----------------------------------------------------------------------------

    def resolve(self, reference: str) -> Json:
        """The image manifest descriptor a tag or digest names (ir-sign: tag first, then digest)."""
        top = descriptors(self.read_index(), "index.json")
        found = [d for d in top if reference in names(d)]
        if not found and DIGEST_RE.match(reference):
            found = [d for d in self.walk() if d["digest"] == reference]
        if not found:
            tags = sorted({n for d in top for n in names(d)})
            known = ", ".join(tags) if tags else "none"
            raise ReferenceNotFoundError(
                f"{reference!r} names no manifest in {self.root} (tags: {known})"
            )
        if len({d["digest"] for d in found}) > 1:
            raise ReferenceNotFoundError(
                f"{reference!r} is ambiguous in {self.root}: "
                + ", ".join(sorted({d["digest"] for d in found}))
            )
        desc = found[0]
        kind = self.kind(desc)
        if kind == "index":
            return self._single_image(desc, reference)
        if kind != "manifest":
            raise LayoutError(f"{reference!r} is a {desc.get('mediaType')}, not an image manifest")
        return desc

    def _single_image(self, desc: Json, reference: str) -> Json:
        children = [
            d
            for d in descriptors(self.read_json(desc), f"index {desc['digest']}")
            if self.kind(d) == "manifest"
            and (d.get("annotations") or {}).get("vnd.docker.reference.type")
            != "attestation-manifest"
        ]
        if len(children) != 1:
            listing = ", ".join(f"{d['digest']} ({_platform(d)})" for d in children)
            raise ReferenceNotFoundError(
                f"{reference!r} is an index of {len(children)} images; pass one digest with -d: "
                + listing
            )
        return children[0]

    def check_complete(self) -> None:
        """Every blob the index tree references exists with its size (layers: stat only)."""
        for desc in self.walk():
            if self.kind(desc) != "manifest":
                self._check_present(desc)
                continue
            manifest = self.read_json(desc)
            config = manifest.get("config")
            layers = manifest.get("layers")
            if not isinstance(config, dict) or not isinstance(layers, list):
                raise LayoutError(f"manifest {desc['digest']} has no config or layers")
            for blob in [config, *layers]:
                self._check_present(blob)

    def _check_present(self, desc: Json) -> None:
        if not isinstance(desc, dict):
            raise LayoutError(f"malformed descriptor {desc!r}")
        digest = check_digest(desc.get("digest"), "descriptor")
        try:
            size = self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            raise LayoutError(f"blob {digest} is missing from {self.root}") from None
        if size != desc.get("size"):
            raise LayoutError(f"blob {digest} is {size} bytes, descriptor says {desc.get('size')}")

    # -- writing -------------------------------------------------------------------------------

    def replace_manifest(self, old: str, manifest: bytes) -> str:
        """Store `manifest`, repoint every descriptor of `old` to it, rehash the indexes above.

        New blobs first, index.json last (atomic rename); on any failure the blobs this call
        created are removed again. Blobs nothing references any more are then deleted.
        """
        created: list[Path] = []
        replaced = [old]
        try:
            new = self._put_blob(manifest, created)
            index = self.read_index()
            if not self._retarget(index, old, new, len(manifest), created, replaced, 0):
                raise LayoutError(f"manifest {old} is not referenced from index.json")
            write_atomic(self.root / INDEX_FILE, dumps(index))
        except BaseException:
            for path in created:
                with contextlib.suppress(OSError):
                    path.unlink()
            raise
        live = {d["digest"] for d in self.walk()}
        for digest in replaced:
            if digest not in live:
                with contextlib.suppress(OSError):
                    self.blob_path(digest).unlink()
        return new

    def _retarget(
        self,
        doc: Json,
        old: str,
        new: str,
        size: int,
        created: list[Path],
        replaced: list[str],
        depth: int,
    ) -> bool:
        if depth > _MAX_DEPTH:
            raise LayoutError(f"{self.root}: indexes nested deeper than {_MAX_DEPTH}")
        modified = False
        for desc in descriptors(doc, "index"):
            if desc["digest"] == old:
                desc["digest"], desc["size"] = new, size
                modified = True
            elif self.kind(desc) == "index":
                child = self.read_json(desc)
                if self._retarget(child, old, new, size, created, replaced, depth + 1):
                    data = dumps(child)
                    replaced.append(desc["digest"])
                    desc["digest"], desc["size"] = self._put_blob(data, created), len(data)
                    modified = True
        return modified

    def _put_blob(self, data: bytes, created: list[Path]) -> str:
        digest = digest_of(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, data, 0o644)
            created.append(path)
        return digest


def _platform(desc: Json) -> str:
    p = desc.get("platform") or {}
    parts = [p.get("os"), p.get("architecture"), p.get("variant")]
    return "/".join(str(x) for x in parts if x) or "no platform"


def init_layout(root: Path) -> None:
    """Write the oci-layout marker of a new layout directory (blobs are added by the caller)."""
    (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    write_atomic(root / LAYOUT_FILE, dumps(LAYOUT_VERSION))
    fsync_dir(root)
