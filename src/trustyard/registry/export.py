"""`trustyard export static`: the registry as a tree of files any static web server can serve.

The plan (`plan_export`) is the list of files a read-only registry needs under `v2/` (manifests
by tag and by digest, blobs, tags lists, the catalog, referrers as the OCI tag-schema index and
as the referrers API answer) and, with signatures, what offline verifiers read: the containers
lookaside layout of simple signatures, the Notary TUF files at the Notary API paths and the
authority statements. `export_apply.apply_export` makes a directory hold exactly that plan.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from trustyard.metadata.base import MetadataStore
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.oci.manifest import Descriptor, parse_manifest, stored_blobs
from trustyard.oci.referrers import referrers_index, tag_schema_tag
from trustyard.registry.signatures import SignatureStore
from trustyard.storage.base import BlobStore

_PAGE = 1000
JSON = "application/json"
OCTETS = "application/octet-stream"
# The statements the authority API serves, as one JSON document (wired by the lead; optional).
Statements = Callable[[], Awaitable[bytes]]


class ExportError(Exception):
    """The export cannot be made as asked (a message for people)."""


class TrustFiles(Protocol):
    """The Notary trust data to export (the trust service, adapted by `wiring`)."""

    async def guns(self) -> list[str]:
        """Every GUN holding trust data."""

    async def file(self, gun: str, role: str, version: int | None = None) -> bytes | None:
        """The role's current file as the Notary API serves it (timestamp freshly signed)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One file of the export: bytes we write, or a store blob we link (or stream)."""

    path: str  # relative to the export directory, "/"-separated
    content_type: str
    size: int
    sha256: str  # hex of the content: what tells an unchanged file from a changed one
    data: bytes | None = None
    blob: Digest | None = None
    digest_header: str | None = None  # Docker-Content-Digest

    @classmethod
    def of(cls, path: str, data: bytes, content_type: str, digest: str | None = None) -> Entry:
        sha = hashlib.sha256(data).hexdigest()
        return cls(path, content_type, len(data), sha, data=data, digest_header=digest)

    @property
    def identity(self) -> str:
        return f"{self.sha256}:{self.size}"


@dataclass
class ExportPlan:
    entries: dict[str, Entry] = field(default_factory=dict)
    repositories: list[str] = field(default_factory=list)
    guns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, entry: Entry) -> None:
        self.entries[entry.path] = entry

    def manifests(self) -> list[Entry]:
        """The files served with their own media type (manifests by tag and by digest)."""
        return sorted(
            (e for e in self.entries.values() if e.digest_header and e.blob is None),
            key=lambda e: e.path,
        )


@dataclass(frozen=True, slots=True)
class ExportSources:
    metadata: MetadataStore
    storage: BlobStore
    signatures: SignatureStore | None = None
    trust: TrustFiles | None = None
    statements: Statements | None = None


def matches(repository: str, patterns: list[str]) -> bool:
    """Shell-style globs (`team/*`, `*/app`); no pattern means every repository."""
    return not patterns or any(fnmatch.fnmatchcase(repository, p) for p in patterns)


async def _all(page: Callable[[int, str | None], Awaitable[list[str]]]) -> list[str]:
    out: list[str] = []
    last: str | None = None
    while True:
        items = await page(_PAGE, last)
        out.extend(items)
        if len(items) < _PAGE:
            return out
        last = items[-1]


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


async def plan_export(
    sources: ExportSources, patterns: list[str], *, signatures: bool
) -> ExportPlan:
    """Every file the export holds, read from the store (one pass, not one transaction)."""
    plan = ExportPlan()
    meta = sources.metadata
    repositories = [r for r in await _all(meta.list_repositories) if matches(r, patterns)]
    plan.add(Entry.of("v2/index.json", b"{}", JSON))
    for name in repositories:
        if await _plan_repository(sources, plan, name, signatures=signatures):
            plan.repositories.append(name)
    plan.add(Entry.of("v2/_catalog", _json({"repositories": plan.repositories}), JSON))
    if signatures and sources.trust is not None:
        await _plan_trust(sources.trust, plan, patterns)
    if signatures and sources.statements is not None:
        plan.add(Entry.of("extensions/v2/_authority/statements", await sources.statements(), JSON))
    _drop_clashes(plan)
    return plan


async def _plan_repository(
    sources: ExportSources, plan: ExportPlan, name: str, *, signatures: bool
) -> bool:
    meta = sources.metadata
    base = f"v2/{name}"
    digests = await _all(lambda n, last: meta.list_manifests(name, n, last))
    subjects: set[Digest] = set()
    exported = 0
    for text in digests:
        record = await meta.get_manifest(name, Digest.parse(text))
        if record is None:
            continue  # deleted while we export
        try:
            manifest = parse_manifest(record.content, record.media_type, schema1_ok=True)
        except RegistryError as exc:
            plan.warnings.append(f"{name}@{text}: not exported ({exc.message})")
            continue
        for digest in stored_blobs(manifest):
            await _plan_blob(sources.storage, plan, name, digest)
        plan.add(Entry.of(f"{base}/manifests/{text}", record.content, record.media_type, text))
        exported += 1
        if record.subject is not None:
            subjects.add(record.subject)
        if signatures and sources.signatures is not None:
            await _plan_simple_signatures(sources.signatures, plan, name, record.digest)
    tags = await _all(lambda n, last: meta.list_tags(name, n, last))
    for tag in tags:
        record = await meta.get_manifest(name, tag)
        path = f"{base}/manifests/{record.digest}" if record is not None else None
        if record is None or path not in plan.entries:
            continue
        plan.add(
            Entry.of(
                f"{base}/manifests/{tag}", record.content, record.media_type, str(record.digest)
            )
        )
    listed = [t for t in tags if f"{base}/manifests/{t}" in plan.entries]
    for subject in sorted(subjects, key=str):
        listed += _plan_referrers(
            plan, base, subject, await meta.referrers(name, subject, None), set(tags)
        )
    if not exported:
        return False
    plan.add(Entry.of(f"{base}/tags/list", _json({"name": name, "tags": sorted(listed)}), JSON))
    return True


async def _plan_blob(storage: BlobStore, plan: ExportPlan, name: str, digest: Digest) -> None:
    path = f"v2/{name}/blobs/{digest}"
    if path in plan.entries:
        return
    stat = await storage.stat(digest)
    if stat is None:
        raise ExportError(
            f"blob {digest} of {name} is missing from the store; run `trustyard scrub` "
            "(nothing was exported)"
        )
    plan.add(Entry(path, OCTETS, stat.size, digest.hex, blob=digest, digest_header=str(digest)))


def _plan_referrers(
    plan: ExportPlan, base: str, subject: Digest, found: list[Descriptor], tags: set[str]
) -> list[str]:
    """The referrers API answer and its tag-schema twin (unless a client pushed that tag)."""
    if not found:
        return []
    index = referrers_index(found)
    digest = str(Digest.of(index))
    plan.add(Entry.of(f"{base}/referrers/{subject}", index, mt.OCI_INDEX, digest))
    tag = tag_schema_tag(subject.algorithm, subject.hex)
    if tag in tags:
        return []
    plan.add(Entry.of(f"{base}/manifests/{tag}", index, mt.OCI_INDEX, digest))
    plan.add(Entry.of(f"{base}/manifests/{digest}", index, mt.OCI_INDEX, digest))
    return [tag]


async def _plan_simple_signatures(
    store: SignatureStore, plan: ExportPlan, name: str, digest: Digest
) -> None:
    """containers/image's lookaside layout: `<name>@<alg>=<hex>/signature-<n>`, n from 1."""
    for n, sig in enumerate(await store.list_signatures(name, digest), start=1):
        path = f"sigstore/{name}@{digest.algorithm}={digest.hex}/signature-{n}"
        plan.add(Entry.of(path, sig.content, OCTETS))


async def _plan_trust(trust: TrustFiles, plan: ExportPlan, patterns: list[str]) -> None:
    """Each matching GUN's TUF files at the paths notary clients fetch: `<role>.json`,
    `<role>.<sha256>.json` (consistent snapshots) and `<n>.root.json` (root rotations)."""
    for gun in sorted(await trust.guns()):
        repository = gun.partition("/")[2]  # GUNs are host[:port]/repository
        if not repository or not matches(repository, patterns):
            continue
        base = f"v2/{gun}/_trust/tuf"
        root = await trust.file(gun, "root")
        if root is None:
            continue
        roles = ["root", "targets", "snapshot", "timestamp"]
        files = {"root": root}
        for role in roles[1:]:
            data = await trust.file(gun, role)
            if data is not None:
                files[role] = data
        pending = _delegations(files.get("targets"))
        while pending:
            role = pending.pop()
            if role in files:
                continue
            data = await trust.file(gun, role)
            if data is not None:
                files[role] = data
                pending += _delegations(data)
        for role, data in files.items():
            plan.add(Entry.of(f"{base}/{role}.json", data, JSON))
            plan.add(Entry.of(f"{base}/{role}.{hashlib.sha256(data).hexdigest()}.json", data, JSON))
        for version in range(1, _version(root) + 1):
            old = await trust.file(gun, "root", version)
            if old is not None:
                plan.add(Entry.of(f"{base}/{version}.root.json", old, JSON))
        plan.guns.append(gun)


def _signed(data: bytes | None) -> dict[str, object]:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        return {}
    signed = body.get("signed") if isinstance(body, dict) else None
    return signed if isinstance(signed, dict) else {}


def _version(data: bytes) -> int:
    version = _signed(data).get("version")
    return version if isinstance(version, int) and 0 < version < 100_000 else 1


def _delegations(targets: bytes | None) -> list[str]:
    delegations = _signed(targets).get("delegations")
    roles = delegations.get("roles") if isinstance(delegations, dict) else None
    if not isinstance(roles, list):
        return []
    return [
        r["name"]
        for r in roles
        if isinstance(r, dict) and isinstance(r.get("name"), str) and _safe_role(r["name"])
    ]


def _safe_role(role: str) -> bool:
    parts = role.split("/")
    return parts[0] == "targets" and all(p and p not in (".", "..") for p in parts)


def _drop_clashes(plan: ExportPlan) -> None:
    """A path cannot be a file and a directory at once (repository `a` with tag `x` and a
    repository `a/manifests/x`, as Distribution's own URLs are ambiguous): such files stay out."""
    parents = {p.rsplit("/", i)[0] for p in plan.entries for i in range(1, p.count("/") + 1)}
    for path in sorted(parents & plan.entries.keys()):
        plan.warnings.append(f"{path}: not exported (another repository needs it as a directory)")
        del plan.entries[path]
