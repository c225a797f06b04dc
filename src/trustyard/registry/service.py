"""Manifests, tags, catalog, referrers and blob reads: what the HTTP handlers call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog

from trustyard.cache.base import Cache
from trustyard.crypto.jws import JwsError, verify_schema1
from trustyard.metadata.audit_base import AuditLog
from trustyard.metadata.base import ManifestRecord, MetadataStore
from trustyard.metadata.events_base import OutboxEntry
from trustyard.oci import mediatypes as mt
from trustyard.oci import schema1
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.manifest import Descriptor, Manifest, parse_manifest
from trustyard.oci.platforms import ALL_PLATFORMS, IndexPlatforms
from trustyard.oci.reference import is_valid_tag, validate_name, validate_tag
from trustyard.oci.referrers import tag_schema_tag
from trustyard.registry.events import PULL, EventRecorder
from trustyard.registry.lifecycle import TagLifecycle
from trustyard.registry.lookups import ManifestLookups
from trustyard.registry.policy import Policy
from trustyard.registry.uploads import Uploads
from trustyard.storage.base import BlobLocation, Storage

MAX_PAGE = 10_000

_log = structlog.get_logger("trustyard.registry")


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    delete_enabled: bool = True
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_blob_bytes: int = 0
    # Which children of a pushed index must already exist (Distribution's indexes.platforms)
    index_platforms: IndexPlatforms = ALL_PLATFORMS
    # Docker schema 1 pushes: "refuse" them, or "verify" their JWS signatures and accept them
    schema1: str = "refuse"


@dataclass(frozen=True, slots=True)
class Page:
    items: list[str]
    next_last: str | None  # set when another page follows


@dataclass(frozen=True, slots=True)
class Referrers:
    descriptors: list[Descriptor]
    filtered: bool


def parse_reference(reference: str) -> str | Digest:
    """A manifest reference is a digest (has a colon) or a tag."""
    if Digest.is_digest(reference):
        return Digest.parse(reference)
    if not is_valid_tag(reference):
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"invalid reference {reference[:150]!r}: not a tag ([a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}) "
            "nor a digest",
        )
    return reference


def lookup_reference(name: str, reference: str) -> str | Digest:
    """The reference of a GET, HEAD or DELETE: one that cannot name a manifest is unknown.

    Distribution and the conformance suite answer 404 MANIFEST_UNKNOWN for a malformed tag or
    digest here (only a PUT's reference is invalid input, 400 MANIFEST_INVALID).
    """
    try:
        return parse_reference(reference)
    except RegistryError as exc:
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest {reference[:150]!r} is not in repository {name}: {exc.message}",
            detail={"reference": reference[:150]},
        ) from None


def page_size(n: str | None) -> int:
    """The `n` of a listing: ASCII digits only (`int` would also take `1_0`, ` 5` or `३`)."""
    if n is None or n == "":
        return MAX_PAGE
    if not (n.isascii() and n.isdigit()):
        raise RegistryError(
            ErrorCode.PAGINATION_INVALID, f"n must be a non-negative integer, got {n[:20]!r}"
        )
    # Past nine digits it is over the cap anyway (and int() refuses very long digit strings).
    return MAX_PAGE if len(n) > 9 else min(int(n), MAX_PAGE)


class Registry:
    """The registry's use cases over a `Storage` and a `MetadataStore`."""

    def __init__(
        self,
        storage: Storage,
        metadata: MetadataStore,
        options: RegistryOptions,
        cache: Cache,
        lookups: ManifestLookups | None = None,
        policy: Policy | None = None,
    ) -> None:
        self.storage = storage
        self.metadata = metadata
        self.options = options
        self.cache = cache  # in-process or shared (Redis): the composition root picks
        self.lookups = lookups
        self.policy = policy  # signature policy on pulls / protected tags (registry/policy.py)
        self.audit: AuditLog | None = None  # who pushed, pulled, deleted (wiring/audit.py)
        self.lifecycle: TagLifecycle | None = None  # immutable tags (registry/lifecycle.py)
        self.uploads = Uploads(storage, metadata, self.cache, max_blob_bytes=options.max_blob_bytes)
        self.events: EventRecorder | None = None  # webhooks (registry/events.py)

    def record_events(self, events: EventRecorder) -> None:
        """Report pushes, pulls, mounts and deletes to `events` from now on."""
        self.events = events
        self.uploads.events = events

    # -- blobs ---------------------------------------------------------------------------------
    async def blob_size(self, name: str, digest: Digest) -> int:
        """Size of a blob from metadata alone: HEAD never touches blob bytes."""
        validate_name(name)
        size = await self.metadata.blob_size(name, digest)
        if size is None:
            raise RegistryError(
                ErrorCode.BLOB_UNKNOWN,
                f"blob {digest} is not in repository {name}",
                detail={"digest": str(digest)},
            )
        return size

    async def locate_blob(self, name: str, digest: Digest) -> BlobLocation:
        size = await self.blob_size(name, digest)
        location = await self.storage.locate(digest)
        if location is None:
            raise RegistryError(
                ErrorCode.BLOB_UNKNOWN,
                f"blob {digest} has no content in storage",
                detail={"digest": str(digest)},
            )
        if self.events is not None and self.events.pulls:
            await self.events.record_grouped(self.events.blob(PULL, name, digest, size))
        return location

    async def delete_blob(self, name: str, digest: Digest) -> None:
        validate_name(name)
        self._require_delete()
        # The delete event commits with the unlink (none when there was nothing to unlink).
        events = self.events.deleted(name, digest, None) if self.events is not None else []
        if not await self.metadata.unlink_blob(name, digest, events=events):
            raise RegistryError(
                ErrorCode.BLOB_UNKNOWN,
                f"blob {digest} is not in repository {name}",
                detail={"digest": str(digest)},
            )

    # -- manifests -----------------------------------------------------------------------------
    async def get_manifest(
        self, name: str, reference: str, accept: list[str] | None = None, *, pull: bool = False
    ) -> ManifestRecord:
        """The manifest `reference` names; `pull`: a client GET (audited), not a HEAD."""
        validate_name(name)
        ref = lookup_reference(name, reference)
        record = await self._lookup(name, ref)
        if record is None:
            if not await self.metadata.repository_exists(name):
                raise _unknown_repository(name)
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {reference} is not in repository {name}",
                detail={"reference": reference},
            )
        served = await self._negotiate(name, record, accept)
        if self.lifecycle is not None:
            self.lifecycle.pulled(name, served.digest)
        if self.policy is not None:
            tag = ref if isinstance(ref, str) and served is record else None
            try:
                await self.policy.on_pull(name, tag, served)
            except RegistryError as exc:
                await self._policy_denied(name, reference, exc)
                raise
        if pull and self.audit is not None:
            self.audit.pulled(name, str(served.digest), reference if isinstance(ref, str) else "")
        if self.events is not None and self.events.pulls:
            tag = ref if isinstance(ref, str) else None
            await self.events.record_grouped(
                self.events.manifest_pulled(
                    name, served.digest, served.media_type, served.size, tag
                )
            )
        return served

    async def _policy_denied(self, name: str, reference: str, exc: RegistryError) -> None:
        """Best effort (a denial changes nothing, so there is no transaction to join): an outbox
        that cannot take the event is logged, and the client still gets the policy's refusal."""
        if self.events is None:
            return
        try:
            await self.events.record(self.events.policy_denied(name, reference, exc.message))
        except Exception as failure:  # the denial must win over the event write
            _log.warning(
                "policy_denied_event_lost", repository=name, reference=reference, error=str(failure)
            )

    async def _lookup(self, name: str, ref: str | Digest) -> ManifestRecord | None:
        if self.lookups is None:
            return await self.metadata.get_manifest(name, ref)
        cached = await self.lookups.get(name, ref)
        if cached is not None:
            return cached
        stamp = await self.lookups.stamp(name)
        record = await self.metadata.get_manifest(name, ref)
        if record is not None:
            await self.lookups.remember(stamp, ref, record)
        return record

    async def changed(self, name: str) -> None:
        """Invalidate cached lookups of `name` after a committed write."""
        if self.lookups is not None:
            await self.lookups.changed(name)

    async def _negotiate(
        self, name: str, record: ManifestRecord, accept: list[str] | None
    ) -> ManifestRecord:
        """Serve the stored bytes when the client accepts their type (or says nothing specific).

        As Distribution does, a client that cannot read indexes gets the linux/amd64 image of
        a multi-platform index by tag; otherwise a type it did not accept is a clear 404.
        """
        if (
            not accept
            or record.media_type in accept
            or any(a in ("*/*", "application/*") for a in accept)
        ):
            return record
        if record.media_type == mt.DOCKER_SCHEMA1 or record.media_type not in mt.INDEXES:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest is {record.media_type}, which the client's Accept header does not include",
            )
        parsed = parse_manifest(
            record.content, record.media_type, record.digest.algorithm, schema1_ok=True
        )
        for child in parsed.children:
            platform = child.platform or {}
            if (
                platform.get("os") == "linux"
                and platform.get("architecture") == "amd64"
                and child.media_type in accept
            ):
                found = await self.metadata.get_manifest(name, child.digest)
                if found is not None:
                    return found
        raise RegistryError(
            ErrorCode.MANIFEST_UNKNOWN,
            f"manifest is a multi-platform index ({record.media_type}), which the client's Accept "
            "header does not include, and it has no linux/amd64 image of an accepted type",
        )

    async def put_manifest(
        self,
        name: str,
        reference: str,
        content_type: str | None,
        body: bytes,
        extra_tags: list[str],
        *,
        actor: str | None = None,
    ) -> Manifest:
        """Store a pushed manifest; `actor` (the requester) goes into the tag history."""
        validate_name(name)
        ref = parse_reference(reference)
        if len(body) > self.options.max_manifest_bytes:
            raise RegistryError(
                ErrorCode.TOO_LARGE,
                f"manifest is larger than the limit of {self.options.max_manifest_bytes} bytes",
            )
        algorithm = ref.algorithm if isinstance(ref, Digest) else "sha256"
        manifest = parse_manifest(
            body, content_type, algorithm, schema1_ok=self.options.schema1 == "verify"
        )
        if manifest.media_type in mt.SCHEMA1:
            _check_schema1(name, body)
        if isinstance(ref, Digest) and manifest.digest != ref:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"manifest bytes have digest {manifest.digest}, not {ref} as the URL says",
                detail={"expected": str(ref), "actual": str(manifest.digest)},
            )
        tags = [ref] if isinstance(ref, str) else []
        tags += [validate_tag(t) for t in extra_tags if t not in tags]
        if self.lifecycle is not None and tags:
            await self.lifecycle.check_tag_changes(name, tags, manifest.digest)
        if self.policy is not None and tags:
            record = ManifestRecord(name, manifest.digest, manifest.media_type, len(body), body)
            try:
                await self.policy.on_push(name, tags, record)
            except RegistryError as exc:
                await self._policy_denied(name, reference, exc)
                raise
        if self.uploads.quotas is not None and not await self.metadata.get_manifest(
            name, manifest.digest
        ):
            await self.uploads.quotas.check_manifest(name, manifest.digest, len(body))
        optional = frozenset(
            c.digest
            for c in manifest.children
            if not self.options.index_platforms.must_exist(c.platform)
        )
        before = await self.metadata.put_manifest(
            name,
            manifest,
            body,
            tags,
            optional_children=optional,
            events=self._push_events(name, manifest, tags),
            actor=actor,
        )
        await self.changed(name)
        self._audit_push(name, manifest, tags, before)
        return manifest

    def _audit_push(
        self, name: str, manifest: Manifest, tags: list[str], before: dict[str, str]
    ) -> None:
        if self.audit is None:
            return
        digest = str(manifest.digest)
        self.audit.record(
            "push",
            repository=name,
            digest=digest,
            tag=",".join(tags)[:128],
            detail={"media_type": manifest.media_type},
        )
        for tag, old in before.items():
            if old != digest:
                self.audit.record(
                    "tag_move",
                    repository=name,
                    digest=digest,
                    tag=tag,
                    detail={"from": old, "to": digest},
                )

    def _push_events(
        self, name: str, manifest: Manifest, tags: list[str]
    ) -> Callable[[dict[str, str]], list[OutboxEntry]]:
        """The outbox rows of a manifest push, made in its transaction from where the tags
        pointed before: `push`, and `tag-moved` for a tag that named another digest."""
        events = self.events

        def rows(before: dict[str, str]) -> list[OutboxEntry]:
            if events is None:
                return []
            digest = str(manifest.digest)
            moved = {tag: old for tag, old in before.items() if old != digest}
            return events.manifest_pushed(name, manifest, tags, moved)

        return rows

    async def delete_manifest(
        self, name: str, reference: str, *, force: bool = False, actor: str | None = None
    ) -> None:
        """Delete by digest (with its tags) or one tag; `force` (administrators, CLI only)
        overrides immutable-tag rules."""
        validate_name(name)
        self._require_delete()
        ref = lookup_reference(name, reference)
        if isinstance(ref, Digest):
            if self.lifecycle is not None:
                await self.lifecycle.check_manifest_delete(name, ref, force=force)
            events = self.events.deleted(name, ref, None) if self.events else []
            found = await self.metadata.delete_manifest(name, ref, actor=actor, events=events)
        else:
            if self.lifecycle is not None:
                await self.lifecycle.check_tag_changes(name, [ref], None, force=force)
            events = self.events.deleted(name, None, ref) if self.events else []
            found = await self.metadata.delete_tag(name, ref, actor=actor, events=events)
        await self.changed(name)
        self._audit_delete(name, ref, found)
        if not found:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {reference} is not in repository {name}",
                detail={"reference": reference},
            )

    def _audit_delete(self, name: str, ref: str | Digest, found: bool) -> None:
        if self.audit is not None:
            self.audit.record(
                "delete",
                repository=name,
                digest=str(ref) if isinstance(ref, Digest) else "",
                tag="" if isinstance(ref, Digest) else ref,
                outcome="success" if found else "not_found",
            )

    async def restore_tag(
        self, name: str, tag: str, digest: Digest, *, force: bool = False, actor: str | None = None
    ) -> ManifestRecord:
        """Point `tag` at a manifest the repository still holds (an earlier target from the tag
        history, say). Immutable-tag rules apply unless `force`; signature policy does not (the
        manifest was accepted once, and this is an administrator's command)."""
        validate_name(name)
        validate_tag(tag)
        record = await self.metadata.get_manifest(name, digest)
        if record is None:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN,
                f"manifest {digest} is no longer in repository {name} (deleted, or collected by "
                "GC after the tag-history window): the tag cannot be restored to it",
                detail={"digest": str(digest)},
            )
        if self.lifecycle is not None:
            await self.lifecycle.check_tag_changes(name, [tag], digest, force=force)
        manifest = parse_manifest(
            record.content, record.media_type, digest.algorithm, schema1_ok=True
        )
        # Stored again as pushed: its references are known, and its grace period starts anew.
        await self.metadata.put_manifest(name, manifest, record.content, [tag], actor=actor)
        await self.changed(name)
        return record

    def _require_delete(self) -> None:
        if not self.options.delete_enabled:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                "deletes are disabled on this registry (delete_enabled = false)",
            )

    # -- listings ------------------------------------------------------------------------------
    async def tags(self, name: str, n: str | None, last: str | None) -> Page:
        validate_name(name)
        limit = page_size(n)
        if limit > 0:
            items = await self.metadata.list_tags(name, limit + 1, last or None)
            if items:
                return _page(items, limit)
        # Only an empty answer needs the second query: an empty repository, or an unknown one.
        if not await self.metadata.repository_exists(name):
            raise _unknown_repository(name)
        return Page([], None)

    async def catalog(self, n: str | None, last: str | None) -> Page:
        limit = page_size(n)
        if limit == 0:
            return Page([], None)
        items = await self.metadata.list_repositories(limit + 1, last or None)
        return _page(items, limit)

    async def referrers(self, name: str, digest: Digest, artifact_type: str | None) -> Referrers:
        """Manifests whose subject is `digest`, plus entries of a pre-existing tag-schema index."""
        validate_name(name)
        found = await self.metadata.referrers(name, digest, artifact_type)
        seen = {d.digest for d in found}
        fallback = await self.metadata.get_manifest(
            name, tag_schema_tag(digest.algorithm, digest.hex)
        )
        if fallback is not None and fallback.media_type in mt.INDEXES:
            try:
                index = parse_manifest(fallback.content, fallback.media_type, schema1_ok=True)
            except RegistryError:
                index = None
            for child in index.children if index else ():
                if child.digest in seen or (artifact_type and child.artifact_type != artifact_type):
                    continue
                seen.add(child.digest)
                found.append(child)
        if not found and fallback is None and not await self.metadata.repository_exists(name):
            raise _unknown_repository(name)
        return Referrers(found, filtered=artifact_type is not None)


def _check_schema1(name: str, body: bytes) -> None:
    """Distribution 2.x's checks of a schema 1 push, in its order: the name it was signed for,
    then every signature (its blobs are checked with the other manifests' on store). The `tag`
    member is not compared with the URL's, as Distribution 2.3+ did not."""
    signed_for = schema1.parse(body).name
    if signed_for != name:
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"schema 1 manifest is for repository {signed_for[:150]!r}, not {name}: its name is "
            "signed, so it cannot be pushed under another one",
            detail={"name": signed_for[:150]},
        )
    try:
        verify_schema1(body)
    except JwsError as exc:
        raise RegistryError(ErrorCode.MANIFEST_UNVERIFIED, exc.reason) from None


def _unknown_repository(name: str) -> RegistryError:
    return RegistryError(
        ErrorCode.NAME_UNKNOWN,
        f"repository {name} is not known to this registry",
        detail={"name": name},
    )


def _page(items: list[str], limit: int) -> Page:
    if len(items) > limit:
        items = items[:limit]
        return Page(items, items[-1])
    return Page(items, None)
