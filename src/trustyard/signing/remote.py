"""sign-image / verify-image on an image in a live registry (`--ref HOST/REPO:TAG`).

The same signature as on a layout: the vendor signs the config blob, the annotations go on the
manifest. Only the config blob and manifests travel: layers are never downloaded or uploaded
(the registry already holds them, the new manifest references the same digests).

Which manifest a reference names:
  * `REPO:TAG` (or `REPO@DIGEST`) naming an image manifest: that manifest;
  * naming an image index that holds exactly one image (attestation manifests aside): that image;
  * `REPO:TAG@DIGEST` where TAG names an index: the image DIGEST inside that index.
Pushing follows the layout rule "new content first, the name last": an image in an index is
pushed by digest first, then the re-hashed index is pushed under the tag, which stores it and
moves the tag in one request; a plain image manifest is pushed under the tag the same way. A reference with no tag pushes by
digest only and moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.crypto.ecdsa import Signer
from trustyard.oci import mediatypes as mt
from trustyard.signing.errors import LayoutError, ReferenceNotFoundError
from trustyard.signing.image import (
    SignResult,
    VerifyReport,
    check_manifest,
    sign_manifest,
    verify_manifest,
)
from trustyard.signing.layout import Json, descriptors, digest_of, dumps
from trustyard.signing.registry_client import Fetched, RegistryClient, RemoteRef


@dataclass(frozen=True)
class Target:
    """The image manifest to sign and, when it sits in an index, that index."""

    manifest: Fetched
    index: Fetched | None


@dataclass(frozen=True)
class RemoteSignResult:
    result: SignResult
    index_digest: str | None  # the re-hashed index, when the image sits in one
    tag: str | None  # the tag that was moved, if any


def _kind(doc: Fetched) -> str:
    if doc.media_type in mt.INDEXES or (not doc.doc.get("mediaType") and "manifests" in doc.doc):
        return "index"
    if doc.media_type in mt.IMAGE_MANIFESTS or "config" in doc.doc:
        return "manifest"
    return "other"


def _images(index: Fetched) -> list[Json]:
    return [
        d
        for d in descriptors(index.doc, f"index {index.digest}")
        if d.get("mediaType") in mt.IMAGE_MANIFESTS
        and (d.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"
    ]


def _platform(desc: Json) -> str:
    p = desc.get("platform") or {}
    parts = [p.get("os"), p.get("architecture"), p.get("variant")]
    return "/".join(str(x) for x in parts if x) or "no platform"


def resolve(client: RegistryClient, ref: RemoteRef) -> Target:
    """Fetch (and check) the image manifest `ref` names, with its index if it has one."""
    top = client.get_manifest(ref.repository, ref.tag or str(ref.digest))
    if _kind(top) == "manifest":
        if ref.digest and ref.tag and top.digest != ref.digest:
            raise ReferenceNotFoundError(
                f"{ref}: tag {ref.tag} names manifest {top.digest}, not {ref.digest}"
            )
        return Target(top, None)
    if _kind(top) != "index":
        raise LayoutError(f"{ref} is a {top.media_type or 'document'}, not an image manifest")
    images = _images(top)
    if ref.digest and ref.tag:
        chosen = [d for d in images if d["digest"] == ref.digest]
        if not chosen:
            raise ReferenceNotFoundError(
                f"{ref}: index {top.digest} (tag {ref.tag}) holds no image {ref.digest}"
            )
    elif len(images) == 1:
        chosen = images
    else:
        listing = ", ".join(f"{d['digest']} ({_platform(d)})" for d in images)
        base = f"{ref.host}/{ref.repository}:{ref.tag or 'TAG'}"
        raise ReferenceNotFoundError(
            f"{ref} is an index of {len(images)} images; name one as {base}@DIGEST: {listing}"
        )
    manifest = client.get_manifest(ref.repository, chosen[0]["digest"])
    if _kind(manifest) != "manifest":
        raise LayoutError(f"{chosen[0]['digest']} in index {top.digest} is not an image manifest")
    return Target(manifest, top)


def _media_type(doc: Fetched, default: str) -> str:
    media = doc.doc.get("mediaType") or doc.media_type
    return str(media) if media else default


def sign_remote(
    client: RegistryClient,
    ref: RemoteRef,
    vendor: Signer,
    endorsement: bytes,
    *,
    additional: bool = False,
) -> RemoteSignResult:
    """Sign the image `ref` names in the registry, push it, and move the tag."""
    target = resolve(client, ref)
    manifest = target.manifest
    config = check_manifest(manifest.doc, manifest.digest)
    config_sha384 = client.hash_blob(ref.repository, config, "sha384")
    signed, sig, slot = sign_manifest(
        manifest.doc, config_sha384, vendor, endorsement, additional=additional
    )
    data = dumps(signed)
    media = _media_type(manifest, mt.OCI_MANIFEST)
    repo = ref.repository
    if target.index is None:
        new_digest = client.put_manifest(repo, ref.tag or digest_of(data), data, media)
        return RemoteSignResult(
            SignResult(manifest.digest, new_digest, sig.key_id, slot), None, ref.tag
        )
    new_digest = client.put_manifest(repo, digest_of(data), data, media)
    index = dict(target.index.doc)
    entries = []
    for desc in descriptors(index, f"index {target.index.digest}"):
        if desc["digest"] == manifest.digest:
            desc = {**desc, "digest": new_digest, "size": len(data)}
        entries.append(desc)
    index["manifests"] = entries
    index_data = dumps(index)
    index_media = _media_type(target.index, mt.OCI_INDEX)
    index_digest = client.put_manifest(
        repo, ref.tag or digest_of(index_data), index_data, index_media
    )
    result = SignResult(manifest.digest, new_digest, sig.key_id, slot)
    return RemoteSignResult(result, index_digest, ref.tag)


def verify_remote(
    client: RegistryClient, ref: RemoteRef, root_pub: ec.EllipticCurvePublicKey
) -> VerifyReport:
    """verify-image's checks on the image `ref` names in the registry."""
    target = resolve(client, ref)
    manifest = target.manifest
    config = check_manifest(manifest.doc, manifest.digest)
    return verify_manifest(
        manifest.digest,
        manifest.doc,
        config,
        lambda: client.hash_blob(ref.repository, config, "sha384"),
        root_pub,
    )
