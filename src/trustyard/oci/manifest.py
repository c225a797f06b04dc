"""Manifest parsing: decide the media type, validate structure, list what a manifest references.

The registry stores and serves the exact bytes it was given; parsing only extracts what it needs
to check references, answer the referrers API and keep GC from breaking images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trustyard.oci import jsonbounds, schema1
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    platform: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = self.annotations
        if self.platform:
            out["platform"] = self.platform
        return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the registry needs to know about one manifest."""

    media_type: str
    digest: Digest
    size: int
    blobs: tuple[Descriptor, ...] = ()
    children: tuple[Descriptor, ...] = ()
    subject: Digest | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def is_index(self) -> bool:
        return self.media_type in mt.INDEXES


def _invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, message)


def _storable(value: str, where: str) -> str:
    """`value`, unless it holds a lone surrogate (JSON `"\\ud800"`): valid JSON, but no UTF-8
    text can hold it, so the database would refuse it later (a 500 instead of this 400)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(
            f"{where} is not valid Unicode text (it contains a lone surrogate)"
        ) from None
    return value


def _descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise _invalid(f"{where} must be a descriptor object")
    media_type = raw.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where} has no mediaType")
    digest_text = raw.get("digest")
    if not isinstance(digest_text, str):
        raise _invalid(f"{where} has no digest")
    try:
        digest = Digest.parse(digest_text)
    except RegistryError as exc:
        raise _invalid(f"{where}: {exc.message}") from None
    size = raw.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where} has no valid size (a non-negative integer)")
    annotations = raw.get("annotations")
    if annotations is not None and not _is_str_map(annotations):
        raise _invalid(f"{where} annotations must map strings to strings")
    artifact_type = raw.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid(f"{where} artifactType must be a string")
    _storable(media_type, f"{where} mediaType")
    if artifact_type is not None:
        _storable(artifact_type, f"{where} artifactType")
    platform = raw.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise _invalid(f"{where} platform must be an object")
    return Descriptor(media_type, digest, size, artifact_type, annotations, platform)


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )


SCHEMA1_REFUSED = (
    "Docker image manifest schema 1 is deprecated and not accepted by this registry (its "
    "schema1 setting is 'refuse'); convert the image with 'skopeo copy --format v2s2' or push it "
    "with a current client"
)


def _ctype(content_type: str | None) -> str | None:
    return (content_type or "").split(";", 1)[0].strip().lower() or None


def is_schema1(body: dict[str, Any], content_type: str | None) -> bool:
    """A schema 1 document by its version, its mediaType or the Content-Type it came with."""
    return (
        body.get("schemaVersion") == 1
        or body.get("mediaType") in mt.SCHEMA1
        or _ctype(content_type) in mt.SCHEMA1
    )


def resolve_media_type(body: dict[str, Any], content_type: str | None) -> str:
    """The manifest's media type from its body and the request's Content-Type.

    A body `mediaType` wins and must agree with Content-Type when both are given; without one we
    fall back to Content-Type, then to the shape of the document.
    """
    declared = body.get("mediaType")
    ctype = _ctype(content_type)
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType must be a string")
    if is_schema1(body, content_type):
        raise _invalid(SCHEMA1_REFUSED)
    if (
        declared
        and ctype
        and ctype not in ("application/json", "application/octet-stream")
        and declared != ctype
    ):
        raise _invalid(
            f"Content-Type {ctype!r} does not match the manifest's mediaType {declared!r}"
        )
    media_type = declared or ctype
    if media_type in (None, "application/json", "application/octet-stream"):
        media_type = (
            mt.OCI_INDEX if "manifests" in body else mt.OCI_MANIFEST if "config" in body else None
        )
    if media_type not in mt.MANIFESTS:
        raise _invalid(
            f"unsupported manifest media type {str(media_type)[:100]!r}; supported: "
            + ", ".join(sorted(mt.MANIFESTS))
        )
    return media_type


def parse_manifest(
    data: bytes, content_type: str | None, algorithm: str = "sha256", *, schema1_ok: bool = False
) -> Manifest:
    """Validate `data` as a manifest and extract its references.

    Schema 1 documents are refused with a clear message unless `schema1_ok` (the `schema1 =
    "verify"` setting on push, and always for bytes already stored); their signatures are
    checked by the caller (crypto/jws.py), not here.
    """
    try:
        body = jsonbounds.loads(data, what="manifest")
    except jsonbounds.JSONBoundsError as exc:
        raise _invalid(str(exc)) from None
    if not isinstance(body, dict):
        raise _invalid("manifest must be a JSON object")
    if schema1_ok and is_schema1(body, content_type):
        return _schema1_manifest(data, algorithm)
    media_type = resolve_media_type(body, content_type)
    if body.get("schemaVersion") != 2:
        raise _invalid("manifest schemaVersion must be 2")

    blobs: list[Descriptor] = []
    children: list[Descriptor] = []
    if media_type in mt.INDEXES:
        entries = body.get("manifests")
        if not isinstance(entries, list):
            raise _invalid("an index must have a 'manifests' array")
        children = [_descriptor(e, f"manifests[{i}]") for i, e in enumerate(entries)]
    else:
        if "config" not in body:
            raise _invalid("an image manifest must have a 'config' descriptor")
        blobs.append(_descriptor(body["config"], "config"))
        layers = body.get("layers", [])
        if not isinstance(layers, list):
            raise _invalid("'layers' must be an array")
        if media_type == mt.DOCKER_MANIFEST and not layers:
            raise _invalid("a Docker schema 2 image manifest must have at least one layer")
        blobs.extend(_descriptor(e, f"layers[{i}]") for i, e in enumerate(layers))

    subject = None
    if body.get("subject") is not None:
        subject = _descriptor(body["subject"], "subject").digest
    artifact_type = body.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    if artifact_type is not None:
        _storable(artifact_type, "artifactType")
    annotations = body.get("annotations") or {}
    if not _is_str_map(annotations):
        raise _invalid("annotations must map strings to strings")
    if artifact_type is None and media_type in mt.IMAGE_MANIFESTS and blobs:
        config_type = blobs[0].media_type
        # The referrers API reports config.mediaType when artifactType is absent.
        artifact_type = config_type
    return Manifest(
        media_type=media_type,
        digest=Digest.of(data, algorithm),
        size=len(data),
        blobs=tuple(blobs),
        children=tuple(children),
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def _schema1_manifest(data: bytes, algorithm: str) -> Manifest:
    """A schema 1 manifest as the registry sees it: its fsLayers are its blobs (GC keeps them),
    its digest is Distribution's (over the signed payload), its type says whether it is signed."""
    parsed = schema1.parse(data, algorithm)
    media_type = mt.DOCKER_SCHEMA1_SIGNED if parsed.signatures else mt.DOCKER_SCHEMA1
    # Schema 1 does not record layer sizes; 0 stands for "unknown" (only digests are stored).
    blobs = tuple(Descriptor(schema1.LAYER_MEDIA_TYPE, d, 0) for d in parsed.blob_sums)
    return Manifest(media_type=media_type, digest=parsed.digest, size=len(data), blobs=blobs)


def content_digest(data: bytes, media_type: str, algorithm: str = "sha256") -> Digest:
    """The digest stored bytes must have: over the bytes, or Distribution's for schema 1."""
    if media_type in mt.SCHEMA1:
        return schema1.manifest_digest(data, algorithm)
    return Digest.of(data, algorithm)


def stored_blobs(manifest: Manifest) -> list[Digest]:
    """Blobs the registry must hold for this manifest (foreign layers live elsewhere)."""
    return [d.digest for d in manifest.blobs if d.media_type not in mt.FOREIGN_LAYERS]
