"""The pull-through mirror: local repositories under a prefix are a cache of an upstream's.

A pull of `prefix/x:tag` is served from the cache when the tag was checked less than
`ttl_seconds` ago (`X-Trustyard-Cache: hit`). Otherwise the upstream is asked with a HEAD first;
the same digest as cached only refreshes the check (still `hit`, no upstream GET, so a cached
pull costs no upstream "pull"). A new digest is fetched (GET), verified against its bytes,
admitted, and stored before it is served (`miss`), without waiting for its blobs: they are
fetched when a client asks for them (so a cold pull streams, upstream to client, instead of
filling the cache first), or all at once by `prefetch`; an index is stored with its child
manifests left to fetch on demand, when a client asks for one by digest. When every
upstream is down (connection refused, timeout, 5xx, 429) a cached tag is served anyway
(`stale`, logged as a warning); nothing cached is a 503 UNAVAILABLE, never a 500.

Blobs a client asks for that are not stored yet are fetched the same way (`mirror_fill`): one
upstream fetch per blob per process, verified by the normal upload path before it is visible,
and carried on when the client hangs up.

Admission: the one hook between "fetched from the upstream" and "stored in the cache" is

    async def admit(name: str, reference: str, manifest: ManifestRecord,
                    source: UpstreamSource) -> None

of an `Admission` (default `AdmitAll`). It is called for every manifest (image, index, and a
child of an index fetched on demand) after its digest was verified and before it or any blob
it references is stored; `name` is the local repository, `reference` the tag or digest the
client asked for, `source` the upstream client and the upstream repository name (to fetch
signatures through). It refuses by raising `RegistryError` (DENIED, with the policy's message):
nothing of the image is stored then. Blobs fetched by a direct blob GET are content-addressed
and not admitted on their own.

Pushes, deletes and uploads into a mirrored prefix are refused (403 DENIED).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from trustyard.metadata.base import ManifestRecord
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.manifest import Manifest, parse_manifest, stored_blobs
from trustyard.oci.reference import validate_name
from trustyard.registry.mirror_fill import SingleFlight, Tee, fill_blob
from trustyard.registry.service import Registry, lookup_reference
from trustyard.remote.errors import RemoteError
from trustyard.remote.upstream_errors import (
    FetchedManifest,
    UpstreamNotFound,
    UpstreamUnavailable,
)
from trustyard.storage.errors import DigestMismatch

if TYPE_CHECKING:  # the client brings httpx: imported only where mirrors are configured
    from trustyard.remote.upstream import UpstreamRegistry

log = structlog.get_logger("trustyard.mirror")

HIT, MISS, STALE = "hit", "miss", "stale"
CACHE_HEADER = "X-Trustyard-Cache"
_BLOB_FILLS = 4  # blobs of one image fetched at once


@dataclass(frozen=True, slots=True)
class UpstreamSource:
    """Where a mirrored manifest came from: the client that fetched it and the upstream name."""

    upstream: UpstreamRegistry
    repository: str


class Admission(Protocol):
    async def admit(
        self, name: str, reference: str, manifest: ManifestRecord, source: UpstreamSource
    ) -> Callable[[], Awaitable[None]] | None:
        """Raise `RegistryError` to keep the manifest (and its blobs) out of the cache.
        Admitted: optionally a step run once the manifest is stored (the verified admission
        stores the signatures it judged with: registry/mirror_admission.py)."""


class AdmitAll:
    """No policy covers the mirror: everything the upstream serves is cached."""

    async def admit(
        self, name: str, reference: str, manifest: ManifestRecord, source: UpstreamSource
    ) -> Callable[[], Awaitable[None]] | None:
        return None


@dataclass
class Mirror:
    """One `[[mirrors]]` table: local `prefix/x` is `upstream_prefix/x` on the upstreams."""

    prefix: str
    upstreams: list[UpstreamRegistry]  # the upstream first, then the fallbacks in order
    upstream_prefix: str = ""
    ttl_seconds: float = 300.0

    def covers(self, name: str) -> bool:
        return name == self.prefix or name.startswith(self.prefix + "/")

    def upstream_name(self, name: str) -> str:
        rest = name[len(self.prefix) :].lstrip("/")
        return "/".join(p for p in (self.upstream_prefix, rest) if p)

    @property
    def upstream(self) -> str:
        return self.upstreams[0].base_url


@dataclass
class Mirrors:
    """The pull-through use cases for every configured mirror."""

    registry: Registry
    mirrors: list[Mirror]
    admission: Admission = field(default_factory=AdmitAll)
    _manifests: SingleFlight[ManifestRecord] = field(default_factory=SingleFlight)
    _blobs: SingleFlight[int] = field(default_factory=SingleFlight)

    def match(self, name: str) -> Mirror | None:
        for mirror in self.mirrors:
            if mirror.covers(name):
                return mirror
        return None

    def refuse_push(self, name: str) -> None:
        """Writes into a mirrored prefix are refused: the upstream owns that content."""
        mirror = self.match(name)
        if mirror is not None:
            raise RegistryError(
                ErrorCode.DENIED,
                f"repository {name} is a mirror of {mirror.upstream}; pushes are refused",
                detail={"name": name, "upstream": mirror.upstream},
            )

    async def aclose(self) -> None:
        await self._blobs.wait_all()
        for mirror in self.mirrors:
            for upstream in mirror.upstreams:
                await upstream.aclose()

    # -- manifests -----------------------------------------------------------------------------
    async def get_manifest(
        self, name: str, reference: str, accept: list[str] | None = None, *, pull: bool = False
    ) -> tuple[ManifestRecord, str]:
        """The manifest and how it was served: `hit`, `miss` or `stale`."""
        validate_name(name)
        mirror = self.match(name)
        assert mirror is not None, "get_manifest is for mirrored repositories"
        ref = lookup_reference(name, reference)
        state = await self._resolve(mirror, name, ref)
        await self._platform_for(mirror, name, ref, accept)
        record = await self.registry.get_manifest(name, reference, accept, pull=pull)
        return record, state

    async def _platform_for(
        self, mirror: Mirror, name: str, ref: str | Digest, accept: list[str] | None
    ) -> None:
        """A client that cannot read indexes gets the index's linux/amd64 image (as the
        registry serves it, `Registry._negotiate`): fetch that child first when it is not
        cached yet."""
        if not accept or any(a in mt.INDEXES or a in ("*/*", "application/*") for a in accept):
            return
        record = await self.registry.metadata.get_manifest(name, ref)
        if record is None or record.media_type not in mt.INDEXES:
            return
        index = parse_manifest(record.content, record.media_type)
        for child in index.children:
            platform = child.platform or {}
            if (
                platform.get("os") == "linux"
                and platform.get("architecture") == "amd64"
                and child.media_type in accept
            ):
                await self._resolve(mirror, name, child.digest)
                return

    async def _resolve(self, mirror: Mirror, name: str, ref: str | Digest) -> str:
        """Make sure `ref` is cached (and fresh enough); say how."""
        local = await self.registry.metadata.get_manifest(name, ref)
        if isinstance(ref, Digest):
            if local is not None:
                return HIT
            try:
                await self._manifests.run(
                    (name, str(ref)), lambda: self._fetch(mirror, name, str(ref), None)
                )
            except UpstreamUnavailable as exc:
                raise _unavailable(name, str(ref), mirror, exc) from None
            return MISS
        if local is not None and await self._fresh(name, ref, local.digest):
            return HIT
        try:
            head, upstream = await self._first(
                mirror.upstreams, lambda u: u.head_manifest(mirror.upstream_name(name), ref)
            )
        except UpstreamUnavailable as exc:
            if local is None:
                raise _unavailable(name, ref, mirror, exc) from None
            return _stale(name, ref, mirror, exc)
        if local is not None and head.digest == str(local.digest):
            await self._checked(mirror, name, ref, local.digest)
            return HIT
        try:
            await self._manifests.run(
                (name, ref, head.digest),
                lambda: self._fetch(mirror, name, ref, upstream),
            )
        except UpstreamUnavailable as exc:
            if local is None:
                raise _unavailable(name, ref, mirror, exc) from None
            return _stale(name, ref, mirror, exc)
        return MISS

    async def _fresh(self, name: str, tag: str, digest: Digest) -> bool:
        seen = await self.registry.cache.get(_check_key(name, tag))
        return seen is not None and seen.decode() == str(digest)

    async def _checked(self, mirror: Mirror, name: str, tag: str, digest: Digest) -> None:
        if mirror.ttl_seconds > 0:
            await self.registry.cache.set(
                _check_key(name, tag), str(digest).encode(), mirror.ttl_seconds
            )

    async def _first(
        self,
        upstreams: list[UpstreamRegistry],
        call: Callable[[UpstreamRegistry], Awaitable[Any]],
    ) -> tuple[Any, UpstreamRegistry]:
        """`call` on the upstream, then on each fallback while they are unavailable."""
        failure: UpstreamUnavailable | None = None
        for upstream in upstreams:
            try:
                return await call(upstream), upstream
            except UpstreamUnavailable as exc:
                failure = exc
            except UpstreamNotFound:
                raise RegistryError(
                    ErrorCode.MANIFEST_UNKNOWN,
                    f"the upstream {upstream.base_url} has no such manifest",
                ) from None
            except RemoteError as exc:
                raise RegistryError(ErrorCode.DENIED, f"mirror upstream: {exc}") from None
        assert failure is not None
        raise failure

    async def _fetch(
        self,
        mirror: Mirror,
        name: str,
        reference: str,
        upstream: UpstreamRegistry | None,
    ) -> ManifestRecord:
        """GET the manifest, verify, admit, store the manifest (and tag); its blobs follow."""
        upstream_name = mirror.upstream_name(name)
        candidates = [upstream] if upstream is not None else mirror.upstreams
        fetched, chosen = await self._first(
            candidates, lambda u: u.get_manifest(upstream_name, reference)
        )
        # A tag that moved between the HEAD and this GET is simply the newer manifest (the
        # HEAD's digest only keys the singleflight); the bytes are checked against the GET's
        # own Docker-Content-Digest and a digest reference.
        manifest = _verified(fetched, reference, chosen)
        record = ManifestRecord(
            name, manifest.digest, manifest.media_type, manifest.size, fetched.content
        )
        after = await self.admission.admit(
            name, reference, record, UpstreamSource(chosen, upstream_name)
        )
        tags = [] if Digest.is_digest(reference) else [reference]
        await self.registry.metadata.put_manifest(
            name,
            manifest,
            fetched.content,
            tags,
            optional_children=frozenset(c.digest for c in manifest.children),
            # Its blobs stream to the client that asks for them next, stored as they pass
            # (`open_blob`); waiting for all of them here would serialize the cold pull.
            optional_blobs=frozenset(stored_blobs(manifest)),
        )
        await self.registry.changed(name)
        if after is not None:
            await after()
        for tag in tags:
            await self._checked(mirror, name, tag, manifest.digest)
        log.info(
            "mirror_cached",
            repository=name,
            reference=reference,
            digest=str(manifest.digest),
            upstream=chosen.base_url,
        )
        return record

    async def _fill_blobs(self, mirror: Mirror, name: str, record: ManifestRecord) -> int:
        """Fetch every blob of a cached manifest that is not stored yet (prefetch); returns
        the bytes its blobs take."""
        manifest = parse_manifest(record.content, record.media_type, schema1_ok=True)
        sizes = {d.digest: d.size for d in manifest.blobs}
        missing = [
            d
            for d in stored_blobs(manifest)
            if await self.registry.metadata.blob_size(name, d) is None
        ]
        gate = asyncio.Semaphore(_BLOB_FILLS)

        async def one(digest: Digest) -> None:
            async with gate:
                try:
                    await self._blob(mirror, name, digest, sizes.get(digest), mirror.upstreams)
                except UpstreamNotFound:
                    raise RegistryError(
                        ErrorCode.MANIFEST_BLOB_UNKNOWN,
                        f"the upstream {mirror.upstream} serves manifest {record.digest} but "
                        f"not its blob {digest}",
                        detail={"digest": str(digest)},
                    ) from None
                except UpstreamUnavailable as exc:
                    raise _blob_unavailable(name, digest, mirror, exc) from None
                except RemoteError as exc:
                    raise RegistryError(ErrorCode.DENIED, f"mirror upstream: {exc}") from None

        await asyncio.gather(*(one(d) for d in missing))
        return sum(d.size for d in manifest.blobs)

    # -- blobs ---------------------------------------------------------------------------------
    async def ensure_blob(self, name: str, digest: Digest) -> str:
        """Make sure blob `digest` of `name` is stored: `hit`, or `miss` after fetching it."""
        validate_name(name)
        mirror = self.match(name)
        assert mirror is not None, "ensure_blob is for mirrored repositories"
        if await self.registry.metadata.blob_size(name, digest) is not None:
            return HIT
        try:
            await self._blob(mirror, name, digest, None, mirror.upstreams)
        except UpstreamNotFound:
            raise _blob_unknown(name, digest) from None
        except UpstreamUnavailable as exc:
            raise _blob_unavailable(name, digest, mirror, exc) from None
        except RemoteError as exc:
            raise RegistryError(ErrorCode.DENIED, f"mirror upstream: {exc}") from None
        return MISS

    async def open_blob(self, name: str, digest: Digest) -> tuple[int | None, Tee] | str:
        """For a GET of a blob not stored yet: start its fill and stream a copy of the bytes
        as they arrive (declared length, `Tee`). `hit` or `miss`: it is stored (already, or
        now by another request's fill): serve it from storage."""
        validate_name(name)
        mirror = self.match(name)
        assert mirror is not None, "open_blob is for mirrored repositories"
        if await self.registry.metadata.blob_size(name, digest) is not None:
            return HIT
        tee = Tee()
        task, started = self._blobs.start(
            (name, str(digest)),
            lambda: self._fill(mirror, name, digest, None, mirror.upstreams, tee),
        )
        try:
            if not started:
                tee.detach()  # another request's fill: wait for it, then serve from storage
                await asyncio.shield(task)
                return MISS
            opened = await asyncio.shield(tee.opened)
            if opened is False:  # another repository held it: linked, nothing to stream
                await asyncio.shield(task)
                return HIT
        except BaseException as exc:
            tee.detach()  # nobody will read the copy: the fill goes on alone
            if isinstance(exc, UpstreamNotFound):
                raise _blob_unknown(name, digest) from None
            if isinstance(exc, UpstreamUnavailable):
                raise _blob_unavailable(name, digest, mirror, exc) from None
            if isinstance(exc, RemoteError):
                raise RegistryError(ErrorCode.DENIED, f"mirror upstream: {exc}") from None
            raise
        assert not isinstance(opened, bool)
        return opened, tee

    async def _blob(
        self,
        mirror: Mirror,
        name: str,
        digest: Digest,
        size: int | None,
        upstreams: list[UpstreamRegistry],
    ) -> int:
        return await self._blobs.run(
            (name, str(digest)), lambda: self._fill(mirror, name, digest, size, upstreams)
        )

    async def _fill(
        self,
        mirror: Mirror,
        name: str,
        digest: Digest,
        size: int | None,
        upstreams: list[UpstreamRegistry],
        tee: Tee | None = None,
    ) -> int:
        """Fetch from the upstream, then the fallbacks while unavailable (until bytes flowed)."""
        upstream_name = mirror.upstream_name(name)
        failure: UpstreamUnavailable | None = None
        try:
            for upstream in upstreams:
                try:
                    return await fill_blob(
                        self.registry.uploads, upstream, name, upstream_name, digest, size, tee
                    )
                except UpstreamUnavailable as exc:
                    if tee is not None and tee.opened.done():
                        raise
                    failure = exc
            assert failure is not None
            raise failure
        except DigestMismatch as exc:
            failed = UpstreamUnavailable(
                f"the upstream sent bytes for blob {digest} that hash to {exc.actual}; nothing "
                "was cached"
            )
            if tee is not None:
                tee.fail(failed)
            raise failed from None
        except BaseException as exc:
            if tee is not None:
                tee.fail(exc)
            raise

    # -- CLI -----------------------------------------------------------------------------------
    async def prefetch(
        self,
        name: str,
        reference: str,
        progress: Callable[[ManifestRecord, int], None] | None = None,
    ) -> list[ManifestRecord]:
        """Cache `name:reference` and, for an index, every child manifest with its blobs.

        `progress` hears of each manifest cached, with the bytes of the blobs it references."""
        mirror = self.match(name)
        assert mirror is not None, "prefetch is for mirrored repositories"
        record, _ = await self.get_manifest(name, reference)
        done = [record]
        size = await self._fill_blobs(mirror, name, record)
        if progress:
            progress(record, size)
        manifest = parse_manifest(record.content, record.media_type, schema1_ok=True)
        for child in manifest.children:
            child_record, _ = await self.get_manifest(name, str(child.digest))
            done.append(child_record)
            size = await self._fill_blobs(mirror, name, child_record)
            if progress:
                progress(child_record, size)
        return done


def _check_key(name: str, tag: str) -> str:
    return f"mirror:checked:{name}:{tag}"


def _verified(fetched: FetchedManifest, reference: str, upstream: UpstreamRegistry) -> Manifest:
    """Parse what the upstream sent and check its digest against every claim made for it."""
    try:
        manifest = parse_manifest(fetched.content, fetched.media_type or None)
    except RegistryError as exc:
        raise RegistryError(
            ErrorCode.UNAVAILABLE,
            f"the upstream {upstream.base_url} sent a manifest this registry cannot store: "
            f"{exc.message}",
        ) from None
    claims = [fetched.digest] if fetched.digest else []
    if Digest.is_digest(reference):
        claims.append(reference)
    for claim in claims:
        if claim != str(manifest.digest):
            raise RegistryError(
                ErrorCode.UNAVAILABLE,
                f"the upstream {upstream.base_url} sent manifest bytes with digest "
                f"{manifest.digest}, not {claim} as it claimed; nothing was cached",
            )
    return manifest


def _blob_unknown(name: str, digest: Digest) -> RegistryError:
    return RegistryError(
        ErrorCode.BLOB_UNKNOWN,
        f"blob {digest} is not in repository {name} nor in its upstream",
        detail={"digest": str(digest)},
    )


def _blob_unavailable(name: str, digest: Digest, mirror: Mirror, exc: Exception) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAVAILABLE,
        f"blob {digest} of {name} is not cached and the upstream {mirror.upstream} is "
        f"unavailable: {exc}",
        headers={"Retry-After": "5"},
    )


def _stale(name: str, tag: str, mirror: Mirror, exc: Exception) -> str:
    """Serve the cached tag while the upstream is down, and say so in the log."""
    log.warning("mirror_stale", repository=name, tag=tag, upstream=mirror.upstream, reason=str(exc))
    return STALE


def _unavailable(name: str, ref: str, mirror: Mirror, exc: Exception) -> RegistryError:
    return RegistryError(
        ErrorCode.UNAVAILABLE,
        f"{name}:{ref} is not cached and the upstream {mirror.upstream} is unavailable: {exc}",
        headers={"Retry-After": "5"},
    )
