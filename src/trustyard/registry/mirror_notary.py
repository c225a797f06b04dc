"""Notary trust data for mirrored repositories: the upstream's, verified, kept for offline use.

A `notary` rule on a mirrored repository (`hub/app`, upstream `library/app`) is judged against
the upstream's trust server and GUN (`trust_gun_prefix` + upstream repository, by default
`upstream-host[:port]/library/app`), never against our own trust store. The collection is
fetched and verified by the trust client (trust/client/remote.fetch_verified: bounded reads,
timestamp and snapshot required, the rule's root pins with TOFU off when it pins), with the
copy kept here as the trusted copies (rollback and root rotation are checked against it).

* Admission (registry/mirror_admission.py) fetches from the upstream and keeps the verified
  files in the admission's stage; only an admitted image's files are written here
  (`remember`), so a refusal leaves nothing.
* The pull path (`collection`) reads the kept copy, which answers for `ttl_seconds` of the
  mirror like a cached tag; after that it asks the upstream again. Upstream unreachable: the kept
  copy is verified as it is, so a pull works offline as long as its metadata has not expired;
  once the kept timestamp (or any role) has expired the pull is refused (fail closed) with a
  message saying so. Nothing kept (another replica admitted it, or the cache was cleared): the
  upstream is asked, and its answer kept when it verifies.

The copies live in a directory (trust/client/trusted.TrustedFiles layout:
`<dir>/tuf/<gun>/metadata/<role>.json`), one per server; a replica without a copy fetches its own.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from trustyard.remote.errors import RemoteError
from trustyard.remote.upstream_errors import UpstreamUnavailable
from trustyard.trust import model as m
from trustyard.trust.client.pinning import TrustPinning
from trustyard.trust.client.remote import (
    FileSource,
    TrustedCopies,
    TrustServerUnreachable,
    fetch_verified,
)
from trustyard.trust.client.trusted import TrustedFiles
from trustyard.trust.client.verify import Collection, VerifyError, verify_collection

log = structlog.get_logger("trustyard.mirror.notary")


class NameMap(Protocol):
    def covers(self, name: str) -> bool: ...

    def upstream_name(self, name: str) -> str: ...


@dataclass(frozen=True)
class NotaryMirror:
    """One mirror's trust server: local `names` -> upstream GUN `gun_prefix + upstream name`."""

    names: NameMap
    gun_prefix: str
    files: FileSource  # remote/upstream_trust.UpstreamTrustFiles
    ttl_seconds: float = 300.0
    server: str = ""

    def gun(self, repository: str) -> str:
        return self.gun_prefix + self.names.upstream_name(repository)


class MirrorNotary:
    """`PolicyContext.mirrored_trust` for the registry's pull path (see the module docstring);
    `fetch` and `remember` are the two halves the admission uses."""

    def __init__(
        self,
        mirrors: Sequence[NotaryMirror],
        cache_dir: Path,
        closing: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.mirrors = list(mirrors)
        self.cache = TrustedFiles(cache_dir)
        self.cache_dir = cache_dir
        self._closing = list(closing)

    async def aclose(self) -> None:
        """Close the trust servers' clients."""
        for close in self._closing:
            await close()

    def _mirror(self, gun: str) -> NotaryMirror | None:
        found = [x for x in self.mirrors if gun.startswith(x.gun_prefix)]
        return max(found, key=lambda x: len(x.gun_prefix)) if found else None

    def mirror_of(self, repository: str) -> NotaryMirror | None:
        return next((x for x in self.mirrors if x.names.covers(repository)), None)

    def gun(self, repository: str) -> str | None:
        mirror = self.mirror_of(repository)
        return mirror.gun(repository) if mirror is not None else None

    async def kept(self, gun: str) -> dict[str, bytes]:
        return await asyncio.to_thread(self.cache.read, gun)

    def _age(self, gun: str) -> float | None:
        path = self.cache_dir / "tuf" / gun / "metadata" / f"{m.TIMESTAMP}.json"
        try:
            return time.time() - path.stat().st_mtime
        except OSError:
            return None

    async def fetch(self, gun: str, pinning: TrustPinning) -> Collection:
        """The upstream's collection of `gun`, verified against the kept copy (not written).
        `UpstreamUnavailable` when the trust server is down; `TrustServerUnreachable` for any
        other failed read; `VerifyError` when it does not verify."""
        mirror = self._mirror(gun)
        if mirror is None:
            raise VerifyError(f"{gun} is not the GUN of a mirrored repository")
        memory = TrustedCopies(1)
        kept = await self.kept(gun)
        if kept:
            memory.put(gun, kept)
        try:
            return await fetch_verified(mirror.files, gun, pinning, memory)
        except UpstreamUnavailable:
            raise
        except RemoteError as exc:
            raise TrustServerUnreachable(str(exc)) from None

    async def remember(self, gun: str, files: dict[str, bytes]) -> None:
        """Keep verified files as the trusted copy of `gun` (each role replaced atomically)."""
        await asyncio.to_thread(self._write, gun, files)

    def _write(self, gun: str, files: dict[str, bytes]) -> None:
        """Each role written aside under a name of its own, then renamed into place: workers
        refreshing the same GUN at once never expose a half-written file. The timestamp goes
        last; its mtime says when the copy was fetched."""
        base = self.cache_dir / "tuf" / gun / "metadata"
        for role in sorted(files, key=lambda r: r == m.TIMESTAMP):
            if not m.valid_role(role):
                continue
            path = base / f"{role}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(files[role])
            os.replace(tmp, path)

    async def collection(self, gun: str, pinning: TrustPinning) -> Collection:
        mirror = self._mirror(gun)
        kept = await self.kept(gun)
        age = self._age(gun)
        if kept and mirror is not None and age is not None and age < mirror.ttl_seconds:
            try:
                return verify_collection(gun, kept, pinning, trusted=kept)
            except VerifyError:
                pass  # expired since, or a pin changed: ask the upstream
        try:
            coll = await self.fetch(gun, pinning)
        except (UpstreamUnavailable, TrustServerUnreachable) as exc:
            if not kept:
                raise TrustServerUnreachable(str(exc)) from None
            try:
                coll = verify_collection(gun, kept, pinning, trusted=kept)
            except VerifyError as stale:
                raise VerifyError(
                    f"the kept copy of the upstream trust data no longer verifies ({stale}) and "
                    f"the upstream trust server cannot be asked ({exc}); refused until it can"
                ) from None
            log.warning("mirror_trust_offline", gun=gun, server=_server(mirror), reason=str(exc))
            return coll
        await self.remember(gun, coll.verified())
        return coll


def _server(mirror: NotaryMirror | None) -> str:
    return mirror.server if mirror is not None else ""


__all__ = ["MirrorNotary", "NotaryMirror"]
