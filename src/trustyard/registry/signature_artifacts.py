"""Which manifests are cosign signature artifacts, exempt from the `cosign` policy kind.

A verifier must be able to fetch signatures, so an enforcing cosign rule serves them unsigned.
Everything about a manifest is the pusher's to choose, labels included: a tar.gz labelled as a
simple-signing payload is an image that clients unpack. So the exemption is decided on the bytes
clients get (the manifest, and every layer and config blob read back from storage), and only
for what carries nothing runnable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trustyard.metadata.base import ManifestRecord
from trustyard.oci import jsonbounds
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.registry.policy import PolicyContext
from trustyard.signing import cosign
from trustyard.signing.errors import SigningError
from trustyard.signing.simplesign import parse_payload

MAX_SIG_MANIFEST = 256 * 1024
MAX_SIG_LAYERS = 64  # layers of one exempt signature artifact
MAX_SIG_CONFIG = 64 * 1024
SIGNATURE_LAYERS = frozenset({cosign.SIMPLESIGNING, cosign.BUNDLE_V03})
SIGNATURE_CONFIGS = frozenset({cosign.OCI_CONFIG, cosign.ARTIFACT_SIG, cosign.OCI_EMPTY})
SIGNATURE_ARTIFACT_TYPES = frozenset({cosign.ARTIFACT_SIG, cosign.BUNDLE_V03})
_EMPTY_DIGEST = "sha256:" + hashlib.sha256(cosign.EMPTY_JSON).hexdigest()
_MANIFEST_KEYS = {"schemaVersion", "mediaType", "artifactType", "config", "layers", "subject",
                  "annotations"}  # fmt: skip
_DESCRIPTOR_KEYS = {"mediaType", "digest", "size", "annotations"}  # no urls, data, platform
_SIG_CONFIG_KEYS = {"architecture", "os", "config", "rootfs", "created", "history"}


def one_of(value: object, options: frozenset[str]) -> bool:
    """`value in options` for JSON values (a list or object is in no set of strings)."""
    return isinstance(value, str) and value in options


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate JSON keys")
    return dict(pairs)


def _strict_json(data: bytes) -> Any:
    """JSON without duplicate keys: what we check is what every client reads."""
    jsonbounds.check(data, what="signature layer")  # no deep recursion in json.loads
    return json.loads(data, object_pairs_hook=_no_duplicates)


async def _read_exact(ctx: PolicyContext, desc: dict[str, Any], limit: int) -> bytes:
    """The blob of `desc`, which must be at most `limit` bytes and match digest and size."""
    try:
        digest = Digest.parse(str(desc.get("digest")))
    except RegistryError:
        raise ValueError(f"descriptor digest {str(desc.get('digest'))[:80]!r} is invalid") from None
    size = desc.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= limit:
        raise ValueError(f"{desc.get('mediaType')} blob of size {size!r} (limit {limit})")
    data = await ctx.read_blob(digest, size)
    if data is None or len(data) != size:
        raise ValueError(f"blob {digest} is missing or not {size} bytes")
    if hashlib.new(digest.algorithm, data).hexdigest() != digest.hex:
        raise ValueError(f"blob {digest} does not match its digest")
    return data


def _check_descriptor(desc: object, where: str) -> dict[str, Any]:
    if not isinstance(desc, dict):
        raise ValueError(f"{where} is not a descriptor")
    extra = sorted(set(desc) - _DESCRIPTOR_KEYS)
    if extra:
        raise ValueError(f"{where} has field(s) {', '.join(extra)}")
    annotations = desc.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise ValueError(f"{where} annotations are not strings")
    return desc


def _check_bundle_shape(data: bytes) -> None:
    bundle = _strict_json(data)
    if not isinstance(bundle, dict) or not str(bundle.get("mediaType", "")).startswith(
        "application/vnd.dev.sigstore.bundle"
    ):
        raise ValueError("not a sigstore bundle")
    if not isinstance(bundle.get("verificationMaterial"), dict):
        raise ValueError("bundle has no verificationMaterial")
    if ("dsseEnvelope" in bundle) == ("messageSignature" in bundle):
        raise ValueError("bundle needs exactly one of dsseEnvelope, messageSignature")
    extra = sorted(set(bundle) - {"mediaType", "verificationMaterial", "dsseEnvelope",
                                   "messageSignature"})  # fmt: skip
    if extra:
        raise ValueError(f"bundle has field(s) {', '.join(extra)}")


def _check_sig_config(data: bytes, layer_digests: list[str]) -> None:
    """cosign's tag-scheme config: empty platform and `config`, diff_ids = the payloads."""
    config = _strict_json(data)
    if not isinstance(config, dict) or set(config) - _SIG_CONFIG_KEYS:
        raise ValueError("config is not cosign's signature config")
    if config.get("architecture", "") != "" or config.get("os", "") != "":
        raise ValueError("config names a platform: an image config, not a signature's")
    if config.get("config") not in ({}, None):
        raise ValueError("config carries a runtime config: an image config, not a signature's")
    rootfs = config.get("rootfs")
    if rootfs != {"type": "layers", "diff_ids": layer_digests}:
        raise ValueError("config rootfs does not list exactly the signature payloads")
    history = config.get("history", [])
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        raise ValueError("config history is malformed")


async def signature_artifact_problem(ctx: PolicyContext, record: ManifestRecord) -> str | None:
    """None when `record` is a cosign signature artifact, else why it is not.

    Exempt is only what carries nothing runnable, checked on the bytes clients would get: an
    image manifest (not an index) of at most MAX_SIG_LAYERS layers that are all, byte for
    byte, bounded simple-signing payloads or sigstore bundles read back from storage, and a
    config that is `{}` or cosign's empty signature config. Media-type labels alone prove
    nothing (a tar.gz labelled as a payload would be unpacked by any client).
    """
    if record.media_type not in mt.IMAGE_MANIFESTS:
        return f"a {record.media_type} is not a signature manifest"
    if len(record.content) > MAX_SIG_MANIFEST:
        return f"manifest is over {MAX_SIG_MANIFEST} bytes"
    try:
        doc = _strict_json(record.content)
        if not isinstance(doc, dict):
            raise ValueError("manifest is not a JSON object")
        extra = sorted(set(doc) - _MANIFEST_KEYS)
        if extra:
            raise ValueError(f"manifest has field(s) {', '.join(extra)}")
        if doc.get("mediaType", record.media_type) != record.media_type:
            raise ValueError("manifest mediaType differs from the stored one")
        artifact_type = doc.get("artifactType")
        if artifact_type is not None and not one_of(artifact_type, SIGNATURE_ARTIFACT_TYPES):
            raise ValueError(f"artifactType {str(artifact_type)[:80]!r}")
        layers = doc.get("layers")
        if not isinstance(layers, list) or not 0 < len(layers) <= MAX_SIG_LAYERS:
            raise ValueError(f"a signature artifact has 1 to {MAX_SIG_LAYERS} layers")
        digests = []
        for i, raw in enumerate(layers):
            layer = _check_descriptor(raw, f"layers[{i}]")
            kind = layer.get("mediaType")
            try:
                if kind == cosign.SIMPLESIGNING and artifact_type != cosign.BUNDLE_V03:
                    parse_payload(await _read_exact(ctx, layer, cosign.simplesign_limit()))
                elif kind == cosign.BUNDLE_V03 and artifact_type != cosign.ARTIFACT_SIG:
                    _check_bundle_shape(await _read_exact(ctx, layer, cosign.MAX_BUNDLE))
                else:
                    raise ValueError(f"a {str(kind)[:80]} is no signature here")
            except (ValueError, RecursionError, SigningError) as exc:
                raise ValueError(f"layers[{i}]: {exc}") from None
            digests.append(str(layer["digest"]))
        config = _check_descriptor(doc.get("config"), "config")
        config_type = config.get("mediaType")
        if not one_of(config_type, SIGNATURE_CONFIGS):
            raise ValueError(f"config is a {str(config_type)[:80]}")
        if config_type == cosign.OCI_CONFIG:
            _check_sig_config(await _read_exact(ctx, config, MAX_SIG_CONFIG), digests)
        elif config.get("digest") != _EMPTY_DIGEST or config.get("size") != 2:
            raise ValueError("an artifact config must be the empty JSON object")
    except (ValueError, RecursionError, SigningError) as exc:
        return f"not a signature artifact: {exc}"
    return None


async def is_signature_artifact(ctx: PolicyContext, record: ManifestRecord) -> bool:
    return await signature_artifact_problem(ctx, record) is None
