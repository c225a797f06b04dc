"""Simple-signing signatures kept by the registry: the containers "signatures" extension API.

`skopeo copy --sign-by` and `podman push --sign-by` store their OpenPGP signatures here when the
registry answers `/v2/` with `X-Registry-Supports-Signatures: 1` (containers/image prefers this API
over a lookaside directory), and read them back on pull for `signedBy` policies. The API is the
one OpenShift's registry offers (GET a list, PUT one signature at a time, no delete).

Uploads are checked before they are stored: a size limit, a well-formed OpenPGP signed message
whose payload is a strict "atomic container signature" and whose manifest digest is the one in
the URL (a signature of another image is refused). The cryptographic check needs the signer's
key, which the registry does not have; clients and registry policies verify against their
trusted keys.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Protocol

from trustyard import jsonbounds
from trustyard.metadata.base import MetadataStore
from trustyard.metadata.signatures_sql import ManifestMissing, StoredSignature
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.reference import validate_name
from trustyard.signing.errors import SigningError
from trustyard.signing.simplesign import check_matches, inspect_atomic

SCHEMA_VERSION = 2
TYPE_ATOMIC = "atomic"
_NAME_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class SignatureStore(Protocol):
    """Where simple signatures live (metadata.signatures_sql.SqlSignatureStore)."""

    async def list_signatures(self, repository: str, digest: Digest) -> list[StoredSignature]: ...

    async def add_signature(
        self, repository: str, digest: Digest, name: str, content: bytes, max_count: int
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class SignatureLimits:
    max_bytes: int = 64 * 1024  # one signature (decoded)
    max_count: int = 64  # per manifest: the list stays far below clients' 4 MiB read limit

    @property
    def max_request_bytes(self) -> int:
        return self.max_bytes * 4 // 3 + 4096


def _digest(text: str) -> Digest:
    if not Digest.is_digest(text):
        raise RegistryError(
            ErrorCode.DIGEST_INVALID, f"{text[:150]!r} is not a digest (expected sha256:<hex>)"
        )
    return Digest.parse(text)


def _invalid(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, f"signature refused: {message}")


class SimpleSignatures:
    """List and add simple signatures of a manifest in a repository."""

    def __init__(
        self, metadata: MetadataStore, store: SignatureStore, limits: SignatureLimits
    ) -> None:
        self.metadata = metadata
        self.store = store
        self.limits = limits

    async def _require_manifest(self, name: str, digest: Digest) -> None:
        if await self.metadata.get_manifest(name, digest) is None:
            if not await self.metadata.repository_exists(name):
                raise RegistryError(
                    ErrorCode.NAME_UNKNOWN,
                    f"repository {name} is not known to this registry",
                    detail={"name": name},
                )
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {digest} is not in repository {name}",
                detail={"digest": str(digest)},
            )

    async def signatures(self, name: str, digest_text: str) -> list[StoredSignature]:
        validate_name(name)
        digest = _digest(digest_text)
        await self._require_manifest(name, digest)
        return await self.store.list_signatures(name, digest)

    @staticmethod
    def render(signatures: list[StoredSignature]) -> dict[str, Any]:
        return {
            "signatures": [
                {
                    "schemaVersion": SCHEMA_VERSION,
                    "name": s.name,
                    "type": TYPE_ATOMIC,
                    "content": base64.b64encode(s.content).decode(),
                }
                for s in signatures
            ]
        }

    def parse_upload(self, digest: Digest, body: bytes) -> tuple[str, bytes]:
        """Validate a PUT body; returns (name, signature bytes)."""
        try:
            doc = jsonbounds.loads(body, what="signature upload body")
        except jsonbounds.JSONInvalid as exc:
            raise _invalid(f"body is not JSON ({exc.reason})") from None
        except jsonbounds.JSONBoundsError as exc:
            raise _invalid(str(exc)) from None
        if not isinstance(doc, dict):
            raise _invalid("body is not a JSON object")
        if doc.get("schemaVersion") != SCHEMA_VERSION:
            raise _invalid(f"schemaVersion must be {SCHEMA_VERSION}")
        if doc.get("type", TYPE_ATOMIC) != TYPE_ATOMIC:
            raise _invalid(f"type must be {TYPE_ATOMIC!r}, got {str(doc.get('type'))[:50]!r}")
        name = doc.get("name")
        prefix = f"{digest}@"
        if (
            not isinstance(name, str)
            or not name.startswith(prefix)
            or not _NAME_SUFFIX.match(name[len(prefix) :])
        ):
            raise _invalid(f"name must be '{digest}@<unique id>' ([A-Za-z0-9._-], ≤ 128)")
        content_text = doc.get("content")
        if not isinstance(content_text, str) or not content_text:
            raise _invalid("content must be the base64 signature")
        try:
            content = base64.b64decode(content_text, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid("content is not valid base64") from None
        if len(content) > self.limits.max_bytes:
            raise RegistryError(
                ErrorCode.TOO_LARGE,
                f"signature of {len(content)} bytes is larger than the limit of "
                f"{self.limits.max_bytes} bytes",
            )
        try:
            signature = inspect_atomic(content)
            check_matches(signature.payload, str(digest))
        except SigningError as exc:
            raise _invalid(str(exc)) from None
        return name, content

    async def put(self, name: str, digest_text: str, body: bytes) -> bool:
        """Store one signature; False when it was already there (the PUT is idempotent)."""
        validate_name(name)
        digest = _digest(digest_text)
        if len(body) > self.limits.max_request_bytes:
            raise RegistryError(
                ErrorCode.TOO_LARGE,
                f"signature upload is larger than the limit of {self.limits.max_request_bytes} "
                "bytes",
            )
        sig_name, content = self.parse_upload(digest, body)
        await self._require_manifest(name, digest)
        try:
            return await self.store.add_signature(
                name, digest, sig_name, content, self.limits.max_count
            )
        except ManifestMissing:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {digest} is not in repository {name}",
                detail={"digest": str(digest)},
            ) from None
        except OverflowError:
            raise RegistryError(
                ErrorCode.DENIED,
                f"manifest {digest} already has {self.limits.max_count} signatures, the limit",
            ) from None
