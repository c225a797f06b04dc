"""Verified admission for the pull-through mirror: the policy decides before anything is cached.

When a signature policy rule covers a mirrored repository, the manifest fetched from the
upstream is judged by the SAME rules the registry applies on every pull (registry/policy.py and
its kinds), but with readers that look at the upstream instead of the local store: cosign's
`sha256-<hex>.sig` tag and OCI 1.1 referrers, containers simple signatures (extension API or
lookaside URL), blobs those signatures need, Notary trust data from the upstream's trust server
(registry/mirror_notary.py). What they read is kept in memory (`Stage`, bounded in bytes);
nothing is written while the decision is made, so a refusal leaves no trace.

Admitted: `Admitted.store()` writes the signature material next to the cached image (the
cosign tag and referrer manifests with their blobs, the simple signatures, the verified Notary
files), so the registry's ordinary pull-path policy verifies the image again later without the
upstream.

Signatures name the upstream (`upstream.example/library/alpine`), the cache holds `hub/alpine`:
`identity_aliases` gives the policy that one explicit mapping (PolicyContext.identity_aliases);
repositories outside a mirror prefix get no alias, so their identity checks are unchanged.

The checks are built once over readers that find the current stage in a ContextVar: each
admission (one asyncio task) sees only its own stage.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import structlog

from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.manifest import Descriptor, parse_manifest
from trustyard.registry.mirror import UpstreamSource
from trustyard.registry.mirror_notary import MirrorNotary
from trustyard.registry.policy import Policy, PolicyContext, build_policy
from trustyard.registry.service import Registry
from trustyard.registry.signature_artifacts import MAX_SIG_MANIFEST
from trustyard.registry.signatures import SimpleSignatures
from trustyard.remote.upstream_errors import UpstreamUnavailable
from trustyard.trust.client.pinning import TrustPinning
from trustyard.trust.client.remote import TrustServerUnreachable
from trustyard.trust.client.verify import Collection

log = structlog.get_logger("trustyard.mirror.admission")
SIGNATURE_KINDS = ("cosign", "simple-signing")
MAX_STAGED_BYTES = 16 * 1024 * 1024  # signature material held for one decision
MAX_STAGED_MANIFESTS = 64
T = TypeVar("T")


class SignatureSource(Protocol):
    """An upstream's signature material (remote/upstream_signatures.HttpSignatureSource)."""

    async def manifest(
        self, repository: str, reference: str, limit: int
    ) -> tuple[str, bytes] | None: ...

    async def blob(self, repository: str, digest: Digest, limit: int) -> bytes | None: ...

    async def referrers(self, repository: str, digest: Digest) -> list[Descriptor]: ...

    async def simple_signatures(self, repository: str, digest: Digest) -> list[bytes]: ...


class NameMap(Protocol):
    """A mirror's name mapping (registry/mirror.Mirror has it): local `prefix/x` is the
    upstream's `upstream_prefix/x`."""

    def covers(self, name: str) -> bool: ...

    def upstream_name(self, name: str) -> str: ...


@dataclass(frozen=True)
class MirrorNames:
    """A NameMap on its own (tests, tools): the same rules as registry/mirror.Mirror."""

    prefix: str
    upstream_prefix: str = ""

    def covers(self, name: str) -> bool:
        return name == self.prefix or name.startswith(self.prefix + "/")

    def upstream_name(self, name: str) -> str:
        rest = name[len(self.prefix) :].lstrip("/")
        return "/".join(p for p in (self.upstream_prefix, rest) if p)


def identity_aliases(mirrors: Sequence[NameMap]) -> Callable[[str], tuple[str, ...]]:
    """PolicyContext.identity_aliases for these mirrors: a mirrored repository's upstream name,
    nothing for any other repository."""

    def aliases(repository: str) -> tuple[str, ...]:
        for mirror in mirrors:
            if mirror.covers(repository):
                name = mirror.upstream_name(repository)
                return (name,) if name and name != repository else ()
        return ()

    return aliases


@dataclass
class Stage:
    """What one admission read from the upstream, held until the decision (then stored)."""

    local: str
    upstream: str
    image: ManifestRecord
    source: SignatureSource
    kinds: frozenset[str]
    blobs: dict[Digest, bytes] = field(default_factory=dict)
    manifests: dict[Digest, ManifestRecord] = field(default_factory=dict)
    tags: dict[str, Digest] = field(default_factory=dict)
    referrer_digests: set[Digest] = field(default_factory=set)
    simple: dict[Digest, list[bytes]] = field(default_factory=dict)
    size: int = 0
    # Notary: the upstream trust data that verified, per GUN (kept once admitted)
    notary: MirrorNotary | None = None
    trust: dict[str, dict[str, bytes]] = field(default_factory=dict)
    # The upstream went away while the check read from it: not a verdict on the image.
    unavailable: UpstreamUnavailable | None = None

    async def _remote(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except UpstreamUnavailable as exc:
            self.unavailable = exc
            raise

    def _take(self, n: int) -> bool:
        if self.size + n > MAX_STAGED_BYTES:
            log.warning(
                "mirror_admission_stage_full", repository=self.local, limit=MAX_STAGED_BYTES
            )
            return False
        self.size += n
        return True

    async def read_blob(self, digest: Digest, limit: int) -> bytes | None:
        if digest in self.blobs:
            data: bytes | None = self.blobs[digest]
            return data if data is not None and len(data) <= limit else None
        data = await self._remote(self.source.blob(self.upstream, digest, limit))
        if data is None or hashlib.new(digest.algorithm, data).hexdigest() != digest.hex:
            return None
        if not self._take(len(data)):
            return None
        self.blobs[digest] = data
        return data

    async def _fetch_manifest(self, reference: str) -> ManifestRecord | None:
        if len(self.manifests) >= MAX_STAGED_MANIFESTS:
            return None
        got = await self._remote(self.source.manifest(self.upstream, reference, MAX_SIG_MANIFEST))
        if got is None or not self._take(len(got[1])):
            return None
        media_type, content = got
        digest = Digest("sha256", hashlib.sha256(content).hexdigest())
        if Digest.is_digest(reference) and Digest.parse(reference) != digest:
            log.warning("mirror_admission_digest_mismatch", reference=reference, got=str(digest))
            return None
        try:
            parsed = parse_manifest(content, media_type or None)
        except RegistryError:
            return None
        record = ManifestRecord(
            self.local, digest, parsed.media_type, len(content), content,
            parsed.subject, parsed.artifact_type,
        )  # fmt: skip
        self.manifests[digest] = record
        return record

    async def get_manifest(self, repository: str, digest: Digest) -> ManifestRecord | None:
        if digest == self.image.digest:
            return self.image
        if digest in self.manifests:
            return self.manifests[digest]
        return await self._fetch_manifest(str(digest))

    async def get_tagged(self, repository: str, tag: str) -> ManifestRecord | None:
        if "cosign" not in self.kinds:
            return None
        record = await self._fetch_manifest(tag)
        if record is not None:
            self.tags[tag] = record.digest
        return record

    async def referrers(self, repository: str, digest: Digest) -> list[Descriptor]:
        if "cosign" not in self.kinds:
            return []
        found = await self._remote(self.source.referrers(self.upstream, digest))
        self.referrer_digests.update(d.digest for d in found)
        return found

    async def simple_signatures(self, repository: str, digest: Digest) -> list[bytes]:
        if "simple-signing" not in self.kinds:
            return []
        if digest not in self.simple:
            found = await self._remote(self.source.simple_signatures(self.upstream, digest))
            self.simple[digest] = [s for s in found if self._take(len(s))]
        return self.simple[digest]

    async def notary_collection(self, gun: str, pinning: TrustPinning) -> Collection:
        """The upstream's verified collection of `gun` (read once per admission)."""
        if self.notary is None:
            raise TrustServerUnreachable("no trust server is configured for this mirror")
        try:
            coll = await self._remote(self.notary.fetch(gun, pinning))
        except UpstreamUnavailable as exc:
            raise TrustServerUnreachable(str(exc)) from None  # self.unavailable says it all
        self.trust[gun] = coll.verified()
        return coll


_STAGE: ContextVar[Stage | None] = ContextVar("trustyard_mirror_stage", default=None)


def _stage() -> Stage:
    stage = _STAGE.get()
    if stage is None:
        raise RuntimeError("mirror admission policy used outside an admission")
    return stage


async def _read_blob(digest: Digest, limit: int) -> bytes | None:
    return await _stage().read_blob(digest, limit)


async def _get_manifest(repository: str, digest: Digest) -> ManifestRecord | None:
    return await _stage().get_manifest(repository, digest)


async def _get_tagged(repository: str, tag: str) -> ManifestRecord | None:
    return await _stage().get_tagged(repository, tag)


async def _referrers(repository: str, digest: Digest) -> list[Descriptor]:
    return await _stage().referrers(repository, digest)


async def _simple_signatures(repository: str, digest: Digest) -> list[bytes]:
    return await _stage().simple_signatures(repository, digest)


class _NoTrustFiles:
    """Our own trust store is never read for an upstream image: a `notary` rule on a repository
    no mirror serves trust data for finds nothing and refuses."""

    async def get(self, gun: str, role: str) -> bytes | None:
        return None


class _StagedTrust:
    """PolicyContext.mirrored_trust during an admission: the upstream's trust server, read
    through the current stage (nothing written until the image is admitted)."""

    def __init__(self, notary: MirrorNotary) -> None:
        self.notary = notary

    def gun(self, repository: str) -> str | None:
        return self.notary.gun(repository)

    async def collection(self, gun: str, pinning: TrustPinning) -> Collection:
        return await _stage().notary_collection(gun, pinning)


def staged_context(
    aliases: Callable[[str], tuple[str, ...]] | None,
    audit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
    local: PolicyContext | None = None,
    notary: MirrorNotary | None = None,
) -> PolicyContext:
    """A PolicyContext whose readers look at the current admission's stage (the upstream).
    `local`: the registry's own context, for the namespace authority's statements."""
    ctx = PolicyContext(
        _read_blob,
        _get_manifest,
        _NoTrustFiles(),
        _get_tagged,
        _referrers,
        _simple_signatures,
        audit,
    )
    ctx.identity_aliases = aliases
    if notary is not None:
        ctx.mirrored_trust = _StagedTrust(notary)
    if local is not None:
        ctx.authority_statements = local.authority_statements
        ctx.authority_generation = local.authority_generation
    return ctx


@dataclass
class Admitted:
    """An admitted image and the signature material to cache with it (`store` after the image
    manifest is stored: simple signatures attach to a stored manifest)."""

    stage: Stage | None
    registry: Registry
    signatures: SimpleSignatures | None

    async def store(self) -> None:
        stage = self.stage
        if stage is None:
            return
        if stage.notary is not None:
            for gun, files in stage.trust.items():
                await stage.notary.remember(gun, files)
        for record in self._to_store(stage):
            await self._store_manifest(stage, record)
        if self.signatures is not None:
            for digest, found in stage.simple.items():
                for content in found:
                    name = f"{digest}@mirror-{hashlib.sha256(content).hexdigest()[:32]}"
                    body = {
                        "schemaVersion": 2,
                        "type": "atomic",
                        "name": name,
                        "content": base64.b64encode(content).decode(),
                    }
                    try:
                        await self.signatures.put(
                            stage.local, str(digest), json.dumps(body).encode()
                        )
                    except RegistryError as exc:  # a limit: junk must not block the rest
                        log.warning(
                            "mirror_signature_not_stored",
                            repository=stage.local,
                            digest=str(digest),
                            reason=exc.message,
                        )

    @staticmethod
    def _to_store(stage: Stage) -> list[ManifestRecord]:
        tagged = set(stage.tags.values())
        return [r for d, r in stage.manifests.items() if d in tagged or d in stage.referrer_digests]

    async def _store_manifest(self, stage: Stage, record: ManifestRecord) -> None:
        parsed = parse_manifest(record.content, record.media_type)
        for desc in parsed.blobs:
            data = stage.blobs.get(desc.digest)
            if data is None:
                data = await stage.source.blob(stage.upstream, desc.digest, MAX_SIG_MANIFEST * 4)
            if data is None:
                raise RegistryError(
                    ErrorCode.BLOB_UNKNOWN,
                    f"signature blob {desc.digest} of {record.digest} is not upstream",
                )
            await self.registry.uploads.monolithic(
                stage.local, str(desc.digest), _chunks(data), str(len(data))
            )
        tags = [t for t, d in stage.tags.items() if d == record.digest]
        reference = tags[0] if tags else str(record.digest)
        await self.registry.put_manifest(
            stage.local, reference, record.media_type, record.content, tags[1:]
        )


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


class MirrorAdmission:
    """The policy's verdict on an upstream manifest before the mirror caches it."""

    def __init__(
        self,
        rules: list[dict[str, Any]],
        ctx: PolicyContext,
        registry: Registry,
        signatures: SimpleSignatures | None,
        notary: MirrorNotary | None = None,
    ) -> None:
        self.policy: Policy = build_policy(rules, ctx)
        self.registry = registry
        self.signatures = signatures
        self.notary = notary

    def covers(self, local: str) -> bool:
        return self.policy.rule_for(local) is not None

    async def admit(
        self,
        local: str,
        upstream: str,
        tag: str | None,
        image: ManifestRecord,
        source: SignatureSource,
        kinds: Sequence[str] = SIGNATURE_KINDS,
    ) -> Admitted:
        """Judge `image` (fetched from `upstream`, to be cached as `local`, pulled by `tag` or
        by digest) with the rule covering `local`. Refused under `enforce`: the policy's
        RegistryError (DENIED), and nothing has been written; `UpstreamUnavailable` when the
        upstream failed while the check read from it. Under `warn` or with no rule: admitted
        (the decision is logged as every policy decision is)."""
        if self.policy.rule_for(local) is None:
            return Admitted(None, self.registry, self.signatures)
        stage = Stage(local, upstream, image, source, frozenset(kinds), notary=self.notary)
        token = _STAGE.set(stage)
        try:
            await self.policy.on_pull(local, tag, image)
        except RegistryError:
            # Refused because the upstream failed mid-check: the mirror's answer to an
            # unavailable upstream (serve what is cached, else 503), never a cached refusal.
            if stage.unavailable is not None:
                raise stage.unavailable from None
            raise
        finally:
            _STAGE.reset(token)
        log.info(
            "mirror_admitted",
            repository=local,
            upstream=upstream,
            digest=str(image.digest),
            signature_manifests=len(Admitted._to_store(stage)),
            simple_signatures=sum(len(v) for v in stage.simple.values()),
            notary_guns=sorted(stage.trust),
        )
        return Admitted(stage, self.registry, self.signatures)


@dataclass(frozen=True)
class MirrorTrust:
    """One mirror's admission settings: where simple signatures are (`lookaside`, else the
    extension API) and which kinds of signature material are fetched (`kinds`)."""

    names: NameMap
    lookaside: str | None = None
    kinds: tuple[str, ...] = SIGNATURE_KINDS


class PolicyAdmission:
    """registry/mirror's `Admission` hook backed by `MirrorAdmission`: refuses by raising the
    policy's DENIED error; admitted, returns the step that stores the signature material,
    which the mirror runs once the image manifest is stored."""

    def __init__(self, admission: MirrorAdmission, mirrors: Sequence[MirrorTrust]) -> None:
        self.admission = admission
        self.mirrors = list(mirrors)

    async def admit(
        self, name: str, reference: str, manifest: ManifestRecord, source: UpstreamSource
    ) -> Callable[[], Awaitable[None]] | None:
        trust = next((m for m in self.mirrors if m.names.covers(name)), None)
        lookaside = trust.lookaside if trust is not None else None
        kinds = trust.kinds if trust is not None else SIGNATURE_KINDS
        # The upstream client's modules bring httpx: imported only where mirrors are configured.
        from trustyard.remote.upstream_signatures import HttpSignatureSource

        signatures = HttpSignatureSource(source.upstream, lookaside=lookaside)
        tag = None if Digest.is_digest(reference) else reference
        admitted = await self.admission.admit(
            name, source.repository, tag, manifest, signatures, kinds
        )
        return admitted.store if admitted.stage is not None else None


def manifest_record(local: str, media_type: str, content: bytes) -> ManifestRecord:
    """The record the policy judges for manifest bytes fetched from an upstream."""
    parsed = parse_manifest(content, media_type or None)
    digest = Digest("sha256", hashlib.sha256(content).hexdigest())
    return ManifestRecord(
        local, digest, parsed.media_type, len(content), content, parsed.subject,
        parsed.artifact_type,
    )  # fmt: skip


__all__ = [
    "SIGNATURE_KINDS",
    "Admitted",
    "MirrorAdmission",
    "MirrorNames",
    "MirrorTrust",
    "NameMap",
    "PolicyAdmission",
    "SignatureSource",
    "Stage",
    "identity_aliases",
    "manifest_record",
    "staged_context",
]
