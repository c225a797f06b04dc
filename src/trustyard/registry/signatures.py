"""Simple-signing signatures kept by the registry: the containers "signatures" extension API.

`skopeo copy --sign-by` and `podman push --sign-by` store their OpenPGP signatures here when the
registry answers `/v2/` with `X-Registry-Supports-Signatures: 1` (containers/image prefers this API
over a lookaside directory), and read them back on pull for `signedBy` policies. The API is the
one OpenShift's registry offers (GET a list, PUT one signature at a time), plus a DELETE for
holders of the delete right (junk uploaded by a pusher must be removable).

Uploads are checked before they are stored: a size limit, a well-formed OpenPGP signed message
whose payload is a strict "atomic container signature" and whose manifest digest is the one in
the URL (a signature of another image is refused). Where a signature policy of the repository
trusts the key an upload names, gpg must verify it with that key (a forged claim is refused);
other signatures are kept for clients with their own keys, bounded per signer and in total, and
never counted against signatures by trusted keys: anyone who may push can upload junk, and junk
must not lock out the real signer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from trustyard.metadata.base import MetadataStore
from trustyard.metadata.events_base import OutboxEntry
from trustyard.metadata.signatures_base import ManifestMissing, StoredSignature
from trustyard.oci import jsonbounds
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.reference import validate_name
from trustyard.registry.policy import UploadVetter
from trustyard.signing.errors import SigningError
from trustyard.signing.simplesign import check_matches, claimed_key_ids, inspect_atomic

SCHEMA_VERSION = 2
TYPE_ATOMIC = "atomic"
_NAME_SUFFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KEY_ID = re.compile(r"^(?:[0-9A-Fa-f]{16}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})$")
Vetters = Callable[[str], list[UploadVetter]]


class SignatureStore(Protocol):
    """Where simple signatures live (implemented on SQL by `metadata.signatures_sql`)."""

    async def list_signatures(self, repository: str, digest: Digest) -> list[StoredSignature]: ...

    async def add_signature(
        self,
        repository: str,
        digest: Digest,
        name: str,
        content: bytes,
        admit: Callable[[list[StoredSignature]], None],
        *,
        events: Sequence[OutboxEntry] = (),
    ) -> bool: ...

    async def delete_signatures(self, repository: str, digest: Digest, names: list[str]) -> int: ...


class SignatureLimitReached(Exception):
    """An upload would pass a limit of SignatureLimits; the message says which."""


@dataclass(frozen=True, slots=True)
class SignatureLimits:
    max_bytes: int = 64 * 1024  # one signature (decoded)
    # per manifest, signatures by keys no policy of the repository trusts (those by trusted
    # keys are bounded by max_per_signer alone): the list stays far below clients' 4 MiB limit
    max_count: int = 64
    max_per_signer: int = 8  # per manifest and signing key (claimed, or verified if trusted)

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


def _signer(key_ids: list[str]) -> str:
    return key_ids[0] if key_ids else "unknown"


class SimpleSignatures:
    """List, add and delete simple signatures of a manifest in a repository."""

    def __init__(
        self,
        metadata: MetadataStore,
        store: SignatureStore,
        limits: SignatureLimits,
        vetters: Vetters | None = None,
        *,
        delete_enabled: bool = True,
    ) -> None:
        self.metadata = metadata
        self.store = store
        self.limits = limits
        self.vetters = vetters
        self.delete_enabled = delete_enabled  # the registry's `delete_enabled` covers these too

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

    async def _vet(
        self, name: str, content: bytes
    ) -> tuple[str, list[UploadVetter], UploadVetter | None]:
        """(signer key ID, the repository's vetters, the one that verified the upload if any);
        refuses a forged claim of a trusted key."""
        vetters = self.vetters(name) if self.vetters is not None else []
        claimed = claimed_key_ids(content)
        judges = [v for v in vetters if v.names_trusted_key(claimed)]
        for judge in judges:
            ok, fingerprint = await judge.vet_upload(content)
            if ok:
                return fingerprint[-16:].upper(), vetters, judge
        if judges:
            raise _invalid(
                f"it names key {_signer(claimed)}, which the signature policy of {name} trusts, "
                "but does not verify with that key"
            )
        return _signer(claimed), vetters, None

    async def _forged(
        self, name: str, digest: Digest, signer: str, judge: UploadVetter
    ) -> set[bytes]:
        """Stored signatures that claim the (trusted, verified) `signer` but do not verify: kept
        from before a rule trusted the key. They must not use up the real signer's quota."""
        forged: set[bytes] = set()
        claiming = [
            s.content
            for s in await self.store.list_signatures(name, digest)
            if _signer(claimed_key_ids(s.content)) == signer
        ]
        for content in claiming[: 2 * self.limits.max_per_signer]:
            ok, _ = await judge.vet_upload(content)
            if not ok:
                forged.add(hashlib.sha256(content).digest())
        return forged

    def _admit(
        self, signer: str, vetters: list[UploadVetter], digest: Digest, forged: set[bytes]
    ) -> Callable[[list[StoredSignature]], None]:
        def trusted(key_ids: list[str]) -> bool:
            return any(v.names_trusted_key(key_ids) for v in vetters)

        def admit(existing: list[StoredSignature]) -> None:
            ids = [
                claimed_key_ids(s.content)
                for s in existing
                if hashlib.sha256(s.content).digest() not in forged
            ]
            same = sum(1 for i in ids if _signer(i) == signer)
            if same >= self.limits.max_per_signer:
                raise SignatureLimitReached(
                    f"manifest {digest} already has {same} signatures by key {signer}, the limit "
                    "per signer"
                )
            if trusted([signer]):
                return
            others = sum(1 for i in ids if not trusted(i))
            if others >= self.limits.max_count:
                raise SignatureLimitReached(
                    f"manifest {digest} already has {others} signatures by keys no signature "
                    f"policy here trusts, the limit (max_signatures_per_manifest); someone with "
                    "the delete right can remove them (DELETE on this URL)"
                )

        return admit

    async def put(
        self, name: str, digest_text: str, body: bytes, events: Sequence[OutboxEntry] = ()
    ) -> bool:
        """Store one signature; False when it was already there (the PUT is idempotent).
        `events` (the `signature-added` outbox rows) commit with it, only when it is new."""
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
        signer, vetters, judge = await self._vet(name, content)
        forged = await self._forged(name, digest, signer, judge) if judge is not None else set()
        try:
            return await self.store.add_signature(
                name,
                digest,
                sig_name,
                content,
                self._admit(signer, vetters, digest, forged),
                events=events,
            )
        except ManifestMissing:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {digest} is not in repository {name}",
                detail={"digest": str(digest)},
            ) from None
        except SignatureLimitReached as exc:
            raise RegistryError(ErrorCode.DENIED, str(exc)) from None

    async def delete(
        self, name: str, digest_text: str, sig_name: str | None, signer: str | None
    ) -> int:
        """Delete a manifest's signatures: the one named `sig_name`, those whose (claimed) signer
        is `signer` (a key ID or fingerprint), or all; returns how many went."""
        if not self.delete_enabled:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "deletes are disabled on this registry (delete_enabled = false)",
            )
        validate_name(name)
        digest = _digest(digest_text)
        if signer is not None and not _KEY_ID.match(signer):
            raise _invalid_delete(f"signer {signer[:80]!r} is not a key ID or fingerprint")
        if sig_name is not None and not sig_name.startswith(f"{digest}@"):
            raise _invalid_delete(f"name must be '{digest}@<id>', as listed by GET")
        stored = await self.store.list_signatures(name, digest)
        if not stored:
            await self._require_manifest(name, digest)
        names = [
            s.name
            for s in stored
            if (sig_name is None or s.name == sig_name)
            and (signer is None or _signer(claimed_key_ids(s.content)) == signer[-16:].upper())
        ]
        if sig_name is not None and not names:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {digest} in {name} has no signature named {sig_name[:200]!r}",
                detail={"digest": str(digest)},
            )
        return await self.store.delete_signatures(name, digest, names)


def _invalid_delete(message: str) -> RegistryError:
    return RegistryError(ErrorCode.MANIFEST_INVALID, f"signature delete refused: {message}")
