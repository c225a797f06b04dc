"""Registry events in Distribution's notification format, fanned out to the endpoints that want
them as outbox rows (written by the metadata store in the transaction of the change).

The envelope and field names are Distribution's (notifications/event.go), so receivers written
for it work unchanged. Actions Distribution has no word for are ours: `tag-moved`,
`signature-added`, `trust-published`, `policy-denied` (docs/operations.md, Events).
"""

from __future__ import annotations

import asyncio
import datetime
import fnmatch
import json
import uuid
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from trustyard.metadata.events_base import OutboxEntry, OutboxStore
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import Manifest

ENVELOPE_MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
BLOB_MEDIA_TYPE = "application/octet-stream"  # what Distribution reports for a layer blob

PUSH, PULL, DELETE, MOUNT = "push", "pull", "delete", "mount"
TAG_MOVED = "tag-moved"
SIGNATURE_ADDED = "signature-added"
TRUST_PUBLISHED = "trust-published"
POLICY_DENIED = "policy-denied"
ACTIONS = frozenset(
    {PUSH, PULL, DELETE, MOUNT, TAG_MOVED, SIGNATURE_ADDED, TRUST_PUBLISHED, POLICY_DENIED}
)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Distribution's `request` record, and the actor, of the HTTP request being served."""

    id: str
    addr: str
    host: str
    method: str
    useragent: str
    scheme: str = "http"
    actor: Callable[[], str] = lambda: ""  # asked only when an event is recorded


# Set by the HTTP layer for each request (http/event_context.py); None outside one (the CLI).
CURRENT_REQUEST: ContextVar[RequestInfo | None] = ContextVar("trustyard_request", default=None)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Who gets which events; built from settings by the composition root."""

    name: str
    actions: frozenset[str] = frozenset()  # empty: every action but pull
    repositories: tuple[str, ...] = ()  # glob patterns; empty: every repository
    media_types: tuple[str, ...] = ()
    pulls: bool = False

    def wants(self, action: str, repository: str, media_type: str | None) -> bool:
        if action == PULL and not self.pulls:
            return False
        if self.actions and action not in self.actions:
            return False
        if self.repositories and not any(
            fnmatch.fnmatchcase(repository, p) for p in self.repositories
        ):
            return False
        return not (self.media_types and media_type and media_type not in self.media_types)


def _timestamp() -> str:
    """RFC 3339 in UTC, as Go marshals a time.Time."""
    now = datetime.datetime.now(datetime.UTC)
    return now.isoformat().replace("+00:00", "Z")


@dataclass
class EventRecorder:
    """Builds events and the outbox rows for the endpoints that want them."""

    endpoints: tuple[Endpoint, ...]
    source_addr: str
    outbox: OutboxStore  # for events with no write of their own (pulls, denials)
    instance_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Group commit of pull events: requests arriving while a batch is written join the next.
    _batch: list[OutboxEntry] = field(default_factory=list, init=False, repr=False)
    _batch_done: asyncio.Future[None] | None = field(default=None, init=False, repr=False)
    _flusher: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    async def record(self, entries: list[OutboxEntry]) -> None:
        if entries:
            await self.outbox.enqueue(entries)

    async def record_grouped(self, entries: list[OutboxEntry]) -> None:
        """Like `record`, returning once the rows are committed, but many concurrent callers
        share one transaction: a pull per request would otherwise queue every pull behind the
        one SQLite writer. The writing runs in its own task, so a caller that goes away (a
        client hanging up) cancels neither the batch nor the others waiting on it."""
        if not entries:
            return
        self._batch.extend(entries)
        if self._batch_done is None:
            self._batch_done = asyncio.get_running_loop().create_future()
        done = self._batch_done
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await asyncio.shield(done)

    async def _flush(self) -> None:
        while self._batch:
            batch, done = self._batch, self._batch_done
            self._batch, self._batch_done = [], None
            assert done is not None
            try:
                await self.outbox.enqueue(batch)
            except Exception as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

    @property
    def pulls(self) -> bool:
        """Whether any endpoint takes pull events (else a pull writes nothing)."""
        return any(e.pulls for e in self.endpoints)

    def entries(self, action: str, repository: str, target: dict[str, Any]) -> list[OutboxEntry]:
        media_type = target.get("mediaType")
        wanting = [e for e in self.endpoints if e.wants(action, repository, media_type)]
        if not wanting:
            return []
        event = self.event(action, repository, target)
        payload = json.dumps(event, separators=(",", ":"))
        return [OutboxEntry(event["id"], e.name, action, repository, payload) for e in wanting]

    def event(self, action: str, repository: str, target: dict[str, Any]) -> dict[str, Any]:
        """One event of the envelope; empty fields left out as Go's `omitempty` does."""
        request = CURRENT_REQUEST.get()
        record: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "timestamp": _timestamp(),
            "action": action,
            "target": {k: v for k, v in {**target, "repository": repository}.items() if v},
            "request": {"id": "", "method": "", "useragent": ""},
            "actor": {},
            "source": {"addr": self.source_addr, "instanceID": self.instance_id},
        }
        if request is not None:
            record["request"] = {
                k: v
                for k, v in {
                    "id": request.id,
                    "addr": request.addr,
                    "host": request.host,
                    "method": request.method,
                    "useragent": request.useragent,
                }.items()
                # id, method and useragent have no omitempty in Distribution
                if v or k in ("id", "method", "useragent")
            }
            actor = request.actor()
            if actor:
                record["actor"] = {"name": actor}
        return record

    def _url(self, repository: str, kind: str, reference: str) -> str:
        request = CURRENT_REQUEST.get()
        host = request.host if request is not None and request.host else self.source_addr
        scheme = request.scheme if request is not None else "http"
        return f"{scheme}://{host}/v2/{repository}/{kind}/{reference}"

    # -- the events the registry records -------------------------------------------------------
    def manifest_pushed(
        self, repository: str, manifest: Manifest, tags: Iterable[str], moved: dict[str, str]
    ) -> list[OutboxEntry]:
        """`push` per tag (one untagged when pushed by digest); `tag-moved` for each tag that
        named another digest before (`moved`: tag -> previous digest)."""
        target = self._manifest_target(repository, manifest)
        out: list[OutboxEntry] = []
        for tag in list(tags) or [""]:
            out += self.entries(PUSH, repository, {**target, "tag": tag})
        for tag, previous in moved.items():
            out += self.entries(
                TAG_MOVED, repository, {**target, "tag": tag, "previousDigest": previous}
            )
        return out

    def _manifest_target(self, repository: str, manifest: Manifest) -> dict[str, Any]:
        references = [d.to_json() for d in (*manifest.blobs, *manifest.children)]
        return {
            "mediaType": manifest.media_type,
            "size": manifest.size,
            "digest": str(manifest.digest),
            "length": manifest.size,
            "url": self._url(repository, "manifests", str(manifest.digest)),
            "references": references,
        }

    def manifest_pulled(
        self, repository: str, digest: Digest, media_type: str, size: int, tag: str | None
    ) -> list[OutboxEntry]:
        target = {
            "mediaType": media_type,
            "size": size,
            "digest": str(digest),
            "length": size,
            "url": self._url(repository, "manifests", str(digest)),
            "tag": tag or "",
        }
        return self.entries(PULL, repository, target)

    def deleted(self, repository: str, digest: Digest | None, tag: str | None) -> list[OutboxEntry]:
        """Distribution's delete event names the digest (manifest or blob) or the tag only."""
        target = {"digest": str(digest) if digest else "", "tag": tag or ""}
        return self.entries(DELETE, repository, target)

    def blob(
        self, action: str, repository: str, digest: Digest, size: int, source: str | None = None
    ) -> list[OutboxEntry]:
        """`push`, `pull` or `mount` (with `fromRepository`) of a blob."""
        target = {
            "mediaType": BLOB_MEDIA_TYPE,
            "size": size,
            "digest": str(digest),
            "length": size,
            "url": self._url(repository, "blobs", str(digest)),
            "fromRepository": source or "",
        }
        return self.entries(action, repository, target)

    def signature_added(self, repository: str, digest: str) -> list[OutboxEntry]:
        """A simple signature (containers/image's lookaside API) stored for a manifest."""
        return self.entries(
            SIGNATURE_ADDED,
            repository,
            {"digest": digest, "url": self._url(repository, "manifests", digest)},
        )

    def trust_published(self, gun: str, roles: list[str]) -> list[OutboxEntry]:
        """A Notary publish to collection `gun` (its `repository`), with the roles it changed."""
        return self.entries(TRUST_PUBLISHED, gun, {"roles": roles})

    def policy_denied(self, repository: str, reference: str, reason: str) -> list[OutboxEntry]:
        target = {"tag": reference if not Digest.is_digest(reference) else ""}
        if Digest.is_digest(reference):
            target["digest"] = reference
        return self.entries(POLICY_DENIED, repository, {**target, "reason": reason[:500]})
