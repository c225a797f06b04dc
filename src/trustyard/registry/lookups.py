"""Cached manifest lookups (by tag and by digest), exact across workers and replicas.

Manifest GET/HEAD is the hottest request a registry serves; this answers repeats from the cache
without a database round trip. Validity comes from per-repository generation stamps (the
`Generations` port of trustyard.cache.base): every manifest or tag write bumps the repository's
stamp.
"""

from __future__ import annotations

import json

from trustyard.cache.base import Cache, Generations
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.telemetry import HIT, MISS, NoTelemetry, Telemetry

_TTL = 300.0


def _encode(stamp: int, record: ManifestRecord) -> bytes:
    head = {
        "g": stamp,
        "d": str(record.digest),
        "m": record.media_type,
        "s": str(record.subject) if record.subject else None,
        "a": record.artifact_type,
    }
    return json.dumps(head).encode() + b"\n" + record.content


def _decode(repository: str, raw: bytes) -> tuple[int, ManifestRecord]:
    head_raw, _, content = raw.partition(b"\n")
    head = json.loads(head_raw)
    record = ManifestRecord(
        repository=repository,
        digest=Digest.parse(head["d"]),
        media_type=head["m"],
        size=len(content),
        content=content,
        subject=Digest.parse(head["s"]) if head["s"] else None,
        artifact_type=head["a"],
    )
    return int(head["g"]), record


class ManifestLookups:
    def __init__(
        self, cache: Cache, generations: Generations, telemetry: Telemetry | None = None
    ) -> None:
        self.cache = cache
        self.generations = generations
        self.telemetry: Telemetry = telemetry or NoTelemetry()  # http.app sets the real one

    @staticmethod
    def _key(repository: str, reference: str | Digest) -> str:
        return f"manifest:{repository}:{reference}"

    async def stamp(self, repository: str) -> int:
        """Take before querying the database; pass to `remember`."""
        return await self.generations.read(repository)

    async def get(self, repository: str, reference: str | Digest) -> ManifestRecord | None:
        raw = await self.cache.get(self._key(repository, reference))
        if raw is None:
            self.telemetry.cache_lookup("manifest", MISS)
            return None
        stamp, record = _decode(repository, raw)
        if stamp != await self.generations.read(repository):
            self.telemetry.cache_lookup("manifest", MISS)  # stale: the repository changed
            return None
        self.telemetry.cache_lookup("manifest", HIT)
        return record

    async def remember(self, stamp: int, reference: str | Digest, record: ManifestRecord) -> None:
        await self.cache.set(self._key(record.repository, reference), _encode(stamp, record), _TTL)

    async def changed(self, repository: str) -> None:
        """Call after a committed write to the repository's manifests or tags."""
        await self.generations.bump(repository)
