"""Docker image manifest schema 1 (`…manifest.v1+prettyjws`, `…v1+json`): parsing, no crypto.

A signed schema 1 manifest is a libtrust "pretty JWS": the signed JSON with a `signatures` member
spliced in before its closing brace. Each signature's protected header records how to undo the
splice: `formatLength` (the bytes of the document before the splice) and `formatTail` (base64url
of the bytes that closed the original, usually "\\n}"). The signed payload is therefore
`raw[:formatLength] + formatTail`, and Distribution 2.x named the manifest by the sha256 of that
payload (signatures removed), which is what clients recompute on pull. No library reads this
format in Python, hence this module; crypto/jws.py verifies the signatures over what it returns.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from trustyard.oci import jsonbounds
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError

# Distribution's schema1.MediaTypeManifestLayer: what an fsLayers blob is.
LAYER_MEDIA_TYPE = "application/vnd.docker.container.image.rootfs.diff+x-gzip"
# Each signature costs a public-key operation: more than this is an attack, not a manifest.
MAX_SIGNATURES = 16
MAX_PROTECTED_BYTES = 4096

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class JwsEntry:
    """One member of `signatures`: the JWS pieces as the document carries them."""

    header: dict[str, Any]  # unprotected: `alg`, `jwk` or `x5c`
    protected: str  # base64url of the protected header, as signed
    signature: bytes


@dataclass(frozen=True, slots=True)
class Schema1Manifest:
    name: str
    tag: str
    architecture: str
    blob_sums: tuple[Digest, ...]  # fsLayers, in document order (repeats kept)
    history: tuple[str, ...]  # v1Compatibility strings
    payload: bytes  # what the signatures cover (the whole document when unsigned)
    signatures: tuple[JwsEntry, ...]  # empty when the document has no `signatures` member
    digest: Digest  # Distribution 2.x's: over `payload`

    def signing_input(self, entry: JwsEntry) -> bytes:
        """JWS Signing Input (RFC 7515 §5.1): protected header . base64url(payload)."""
        return f"{entry.protected}.{b64url_encode(self.payload)}".encode("ascii")


def _invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, f"schema 1 manifest: {message}")


def unverified(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_UNVERIFIED, f"schema 1 manifest: {message}")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def b64url_decode(text: str, what: str) -> bytes:
    """Strict unpadded base64url (Python's decoder would skip stray characters silently)."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise unverified(f"{what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise unverified(f"{what} is not base64url") from None


def parse(raw: bytes, algorithm: str = "sha256") -> Schema1Manifest:
    """Validate `raw` as a schema 1 manifest; MANIFEST_INVALID or MANIFEST_UNVERIFIED if not.

    Signatures are split out and the payload rebuilt, but not verified (crypto/jws.py does).
    """
    doc = _load(raw, "manifest")
    if "signatures" in doc:
        entries = _entries(doc["signatures"])
        payload = _payload(raw, entries)
        signed = _load(payload, "signed payload")
        rest = {k: v for k, v in doc.items() if k != "signatures"}
        if signed != rest:
            # Clients read the whole document, Distribution read the payload: both must agree.
            raise unverified(
                "the document holds content outside its signed payload (members added or "
                "changed after signing)"
            )
    else:
        entries, payload, signed = (), raw, doc
    return _fields(signed, payload, entries, algorithm)


def manifest_digest(raw: bytes, algorithm: str = "sha256") -> Digest:
    """Distribution 2.x's digest of a schema 1 manifest (over the payload, signatures removed)."""
    return parse(raw, algorithm).digest


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = jsonbounds.loads(data, what=f"schema 1 {what}")
    except jsonbounds.JSONBoundsError as exc:
        raise _invalid(str(exc)) from None
    if not isinstance(doc, dict):
        raise _invalid(f"the {what} must be a JSON object")
    return doc


def _entries(value: Any) -> tuple[JwsEntry, ...]:
    if not isinstance(value, list) or not value:
        raise unverified("'signatures' must be a non-empty array")
    if len(value) > MAX_SIGNATURES:
        raise unverified(f"{len(value)} signatures; at most {MAX_SIGNATURES} are accepted")
    entries = []
    for i, item in enumerate(value):
        where = f"signatures[{i}]"
        if not isinstance(item, dict):
            raise unverified(f"{where} must be an object")
        header, protected, signature = (
            item.get("header"),
            item.get("protected"),
            item.get("signature"),
        )
        if not isinstance(header, dict):
            raise unverified(f"{where} has no 'header' object")
        if not isinstance(protected, str) or not protected:
            raise unverified(f"{where} has no 'protected' header")
        if len(protected) > MAX_PROTECTED_BYTES:
            raise unverified(f"{where} protected header is over {MAX_PROTECTED_BYTES} bytes")
        if not isinstance(signature, str):
            raise unverified(f"{where} has no 'signature'")
        entries.append(JwsEntry(header, protected, b64url_decode(signature, f"{where} signature")))
    return tuple(entries)


def _format(entry: JwsEntry, where: str) -> tuple[int, bytes]:
    """formatLength and the decoded formatTail of one signature's protected header."""
    try:
        header = jsonbounds.loads(
            b64url_decode(entry.protected, f"{where} protected header"), what="protected header"
        )
    except jsonbounds.JSONBoundsError as exc:
        raise unverified(f"{where}: {exc}") from None
    if not isinstance(header, dict):
        raise unverified(f"{where} protected header is not a JSON object")
    length, tail = header.get("formatLength"), header.get("formatTail")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise unverified(f"{where} protected header has no valid formatLength")
    if not isinstance(tail, str):
        raise unverified(f"{where} protected header has no formatTail")
    return length, b64url_decode(tail, f"{where} formatTail")


def _payload(raw: bytes, entries: tuple[JwsEntry, ...]) -> bytes:
    """raw[:formatLength] + formatTail, when every signature agrees on both (libtrust's rule)."""
    length, tail = _format(entries[0], "signatures[0]")
    for i, entry in enumerate(entries[1:], 1):
        if _format(entry, f"signatures[{i}]") != (length, tail):
            raise unverified(
                f"signatures[{i}] disagrees with signatures[0] on formatLength/formatTail"
            )
    if length > len(raw):
        raise unverified(f"formatLength {length} is past the end of the {len(raw)}-byte document")
    return raw[:length] + tail


def _string(doc: dict[str, Any], key: str) -> str:
    """A string member; may be empty (skopeo writes `"name": ""` outside a registry)."""
    value = doc.get(key, "")
    if not isinstance(value, str):
        raise _invalid(f"'{key}' must be a string")
    return value


def _blob_sum(layer: Any, i: int) -> Digest:
    text = layer.get("blobSum") if isinstance(layer, dict) else None
    if not isinstance(text, str):
        raise _invalid(f"fsLayers[{i}] has no blobSum")
    if text.startswith("tarsum"):
        raise _invalid(
            f"fsLayers[{i}] is a tarsum ({text[:60]!r}); only content digests (sha256:…) name "
            "blobs in a registry: push with a Docker 1.10+ or skopeo client"
        )
    try:
        return Digest.parse(text)
    except RegistryError as exc:
        raise _invalid(f"fsLayers[{i}]: {exc.message}") from None


def _fields(
    doc: dict[str, Any], payload: bytes, entries: tuple[JwsEntry, ...], algorithm: str
) -> Schema1Manifest:
    if doc.get("schemaVersion") != 1:
        raise _invalid("schemaVersion must be 1")
    layers, history = doc.get("fsLayers"), doc.get("history", [])
    if not isinstance(layers, list) or not layers:
        raise _invalid("'fsLayers' must be a non-empty array")
    if not isinstance(history, list):
        raise _invalid("'history' must be an array")
    if len(history) != len(layers):  # Distribution: "mismatched history and fslayer cardinality"
        raise _invalid(f"{len(history)} history entries for {len(layers)} fsLayers")
    compat = []
    for i, entry in enumerate(history):
        value = entry.get("v1Compatibility") if isinstance(entry, dict) else None
        if not isinstance(value, str):
            raise _invalid(f"history[{i}] has no v1Compatibility string")
        compat.append(value)
    return Schema1Manifest(
        name=_string(doc, "name"),
        tag=_string(doc, "tag"),
        architecture=_string(doc, "architecture"),
        blob_sums=tuple(_blob_sum(layer, i) for i, layer in enumerate(layers)),
        history=tuple(compat),
        payload=payload,
        signatures=entries,
        digest=Digest.of(payload, algorithm),
    )
