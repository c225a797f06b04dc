"""The web UI's read model: repositories, tags, images, signatures, policy verdicts, trust data.

A use case like the others (no HTTP types, only ports): every method takes `visible`, the
caller's pull right on a repository name (the same rule the /v2 API applies), and never returns
a name, tag or signature the caller could not pull; a hidden repository is reported exactly as
a missing one (`NotVisible`), so the UI cannot be used to probe for names.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from trustyard.metadata.audit_base import AuditEntry, AuditQuery, AuditStore
from trustyard.metadata.auth_base import Account, AclRule, AuthStore
from trustyard.metadata.base import ManifestRecord
from trustyard.metadata.browse_base import BrowseIndex, TagRow
from trustyard.metadata.lifecycle_base import TagHistoryIndex
from trustyard.oci import jsonbounds
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.oci.manifest import Descriptor, parse_manifest
from trustyard.oci.reference import validate_name
from trustyard.registry.gc import GcReport
from trustyard.registry.policy import Verdict, evaluate
from trustyard.registry.service import Registry
from trustyard.registry.signatures import SignatureStore
from trustyard.signing.errors import SigningError
from trustyard.signing.simplesign import claimed_key_ids
from trustyard.trust.store import TrustStore

T = TypeVar("T")
Visible = Callable[[str], Awaitable[bool]]
PAGE = 50
MAX_SCAN = 5000  # repositories looked at per search page before offering "more"
MAX_CONFIG = 1024 * 1024  # an image config larger than this is not shown
EXPIRY_WARNING_DAYS = 30
ROLES = ("root", "targets", "snapshot", "timestamp")


class NotVisible(LookupError):
    """No such repository or manifest, or the caller may not pull it (indistinguishable)."""


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next: str | None  # the cursor of the following page, None on the last one


@dataclass(frozen=True)
class TagView:
    name: str
    digest: str
    media_type: str
    size: int | None  # config + layers of an image; None for an index
    platforms: list[str]
    pushed_at: float
    pushed_by: str | None
    signed: bool


@dataclass(frozen=True)
class PlatformView:
    platform: str
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class HistoryView:
    created: str
    created_by: str
    empty_layer: bool


@dataclass(frozen=True)
class ImageView:
    repository: str
    digest: str
    media_type: str
    manifest_size: int
    is_index: bool
    tags: list[str]
    platforms: list[PlatformView]
    config: Descriptor | None
    config_json: str | None
    layers: list[Descriptor]
    total_size: int
    history: list[HistoryView]
    annotations: dict[str, str]
    referrers: list[Descriptor]
    subject: str | None
    manifest_json: str


@dataclass(frozen=True)
class SignatureView:
    """One signature (or signature check) of an image: `verified` None when it is stored but no
    policy rule of the repository checks it (the UI says so rather than guessing)."""

    kind: str
    source: str
    verified: bool | None
    reason: str
    signer: str | None = None


@dataclass(frozen=True)
class RoleView:
    role: str
    version: int | None
    expires: str | None
    threshold: int | None
    keys: list[str]
    warning: str | None


@dataclass(frozen=True)
class TrustView:
    gun: str
    roles: list[RoleView]
    delegations: list[RoleView] = field(default_factory=list)


def _platform(raw: dict[str, Any] | None) -> str:
    if not raw:
        return "unknown"
    text = f"{raw.get('os', '?')}/{raw.get('architecture', '?')}"
    return f"{text}/{raw['variant']}" if raw.get("variant") else text


def _json(data: bytes, what: str) -> Any:
    try:
        return jsonbounds.loads(data, what=what, max_bytes=MAX_CONFIG)
    except ValueError:
        return None


def _tag_view(row: TagRow) -> TagView:
    size: int | None = None
    platforms: list[str] = []
    try:
        manifest = parse_manifest(row.content, row.media_type, schema1_ok=True)
    except RegistryError:
        manifest = None
    if manifest is not None and manifest.is_index:
        platforms = [_platform(c.platform) for c in manifest.children]
    elif manifest is not None:
        size = sum(b.size for b in manifest.blobs)
        doc = _json(row.content, "manifest")
        config = doc.get("config") if isinstance(doc, dict) else None
        if isinstance(config, dict) and isinstance(config.get("platform"), dict):
            platforms = [_platform(config["platform"])]
    return TagView(
        row.name,
        row.digest,
        row.media_type,
        size,
        platforms,
        row.updated_at,
        row.pushed_by,
        row.signed,
    )


def _expiry(expires: object, now: float) -> tuple[str | None, str | None]:
    """The expiry as text, and a warning when it is past or within EXPIRY_WARNING_DAYS."""
    if not isinstance(expires, str):
        return None, None
    try:
        when = dt.datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return expires, "unreadable expiry date"
    days = (when - now) / 86400
    if days < 0:
        return expires, "expired"
    if days < EXPIRY_WARNING_DAYS:
        return expires, f"expires in {days:.0f} days"
    return expires, None


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _role_view(
    role: str, signed: dict[str, Any] | None, spec: dict[str, Any], now: float
) -> RoleView:
    """A role's signed part (None: a delegation, or missing) and its key spec from its parent."""
    expires, warning = _expiry(signed.get("expires") if signed else None, now)
    version = signed.get("version") if signed else None
    threshold = spec.get("threshold")
    return RoleView(
        role,
        version if isinstance(version, int) else None,
        expires,
        threshold if isinstance(threshold, int) else None,
        [str(k) for k in spec.get("keyids") or []][:20],
        warning if signed or role not in ROLES else "missing",
    )


class Browse:
    """The pages' data. `index` serves the paginated lists; the rest comes from the registry's
    own ports (signature store, trust store, accounts, audit log), each optional."""

    def __init__(
        self,
        registry: Registry,
        index: BrowseIndex,
        *,
        signatures: SignatureStore | None = None,
        history: TagHistoryIndex | None = None,
        trust: TrustStore | None = None,
        gun_prefixes: Sequence[str] = (),
        accounts: AuthStore | None = None,
        audit: AuditStore | None = None,
        gc_preview: Callable[[], Awaitable[GcReport]] | None = None,
        read_blob: Callable[[Digest, int], Awaitable[bytes | None]] | None = None,
    ) -> None:
        self.registry = registry
        self.index = index
        self.signatures = signatures
        self.history = history
        self.trust = trust
        self.gun_prefixes = tuple(gun_prefixes)
        self.accounts = accounts
        self.audit = audit
        self.gc_preview = gc_preview
        self.read_blob = read_blob

    # -- lists ---------------------------------------------------------------------------------
    async def repositories(
        self, text: str, after: str | None, visible: Visible, limit: int = PAGE
    ) -> Page[str]:
        """Names containing `text` the caller may pull. Hidden names are skipped in the
        database's order; after MAX_SCAN skipped rows the page ends early with a cursor."""
        found: list[str] = []
        cursor, scanned = after, 0
        while True:
            batch = await self.index.search_repositories(text, limit, cursor)
            for name in batch:
                if await visible(name):
                    found.append(name)
                    if len(found) == limit:
                        return Page(found, name)
            if len(batch) < limit:
                return Page(found, None)
            cursor, scanned = batch[-1], scanned + len(batch)
            if scanned >= MAX_SCAN:
                return Page(found, cursor)

    async def _require(self, name: str, visible: Visible) -> None:
        try:
            validate_name(name)
        except RegistryError:
            raise NotVisible(name) from None
        if not await visible(name) or not await self.registry.metadata.repository_exists(name):
            raise NotVisible(name)

    async def tags(
        self, name: str, after: str | None, visible: Visible, limit: int = PAGE
    ) -> tuple[Page[TagView], int]:
        """One page of `name`'s tags and the repository's tag count."""
        await self._require(name, visible)
        rows = await self.index.tag_page(name, limit + 1, after)
        more = len(rows) > limit
        rows = rows[:limit]
        views = [_tag_view(row) for row in rows]
        return Page(views, rows[-1].name if more else None), await self.index.tag_count(name)

    # -- one image -----------------------------------------------------------------------------
    async def record(self, name: str, digest: str, visible: Visible) -> ManifestRecord:
        await self._require(name, visible)
        if not Digest.is_digest(digest):
            raise NotVisible(digest)
        record = await self.registry.metadata.get_manifest(name, Digest.parse(digest))
        if record is None:
            raise NotVisible(digest)
        return record

    async def image(self, record: ManifestRecord) -> ImageView:
        """The page of `record` (from `record`, which checked the caller may see it)."""
        name = record.repository
        manifest = parse_manifest(record.content, record.media_type, schema1_ok=True)
        doc = _json(record.content, "manifest")
        doc = doc if isinstance(doc, dict) else {}
        platforms = [
            PlatformView(_platform(c.platform), str(c.digest), c.size, c.media_type)
            for c in manifest.children
        ]
        config = None
        raw_config = doc.get("config")
        if isinstance(raw_config, dict):
            config = next(
                (b for b in manifest.blobs if str(b.digest) == raw_config.get("digest")), None
            )
        layers = [b for b in manifest.blobs if b is not config]
        config_doc: Any = None
        if config is not None and self.read_blob is not None and config.size <= MAX_CONFIG:
            data = await self.read_blob(config.digest, MAX_CONFIG)
            config_doc = _json(data, "config") if data is not None else None
        history = []
        if isinstance(config_doc, dict) and isinstance(config_doc.get("history"), list):
            for entry in config_doc["history"][:500]:
                if isinstance(entry, dict):
                    history.append(
                        HistoryView(
                            str(entry.get("created", "")),
                            str(entry.get("created_by", "")),
                            bool(entry.get("empty_layer", False)),
                        )
                    )
        referrers = (await self.registry.referrers(name, record.digest, None)).descriptors
        tags = await self.history.tags_of(name, str(record.digest)) if self.history else []
        return ImageView(
            repository=name,
            digest=str(record.digest),
            media_type=record.media_type,
            manifest_size=record.size,
            is_index=manifest.is_index,
            tags=tags,
            platforms=platforms,
            config=config,
            config_json=json.dumps(config_doc, indent=2)[:65536] if config_doc else None,
            layers=layers,
            total_size=sum(b.size for b in manifest.blobs),
            history=history,
            annotations=dict(manifest.annotations),
            referrers=referrers,
            subject=str(manifest.subject) if manifest.subject else None,
            manifest_json=json.dumps(doc, indent=2)
            if doc
            else record.content.decode("utf-8", "replace"),
        )

    async def verdict(self, record: ManifestRecord, tag: str | None = None) -> Verdict:
        """Would a pull be served, by which rule, why (nothing logged, audited or raised)."""
        return await evaluate(self.registry.policy, record.repository, record, tag)

    async def signatures_of(self, record: ManifestRecord, verdict: Verdict) -> list[SignatureView]:
        """Every signature check the repository's policy runs (verified or not, with the reason)
        and every signature stored next to the image that no check covers."""
        views = [
            SignatureView(kind, f"policy rule {verdict.rule}", d.ok, d.reason, d.signer)
            for kind, d in verdict.checks
        ]
        checked = {kind for kind, _ in verdict.checks}
        name, digest = record.repository, record.digest
        if self.signatures is not None and "simple-signing" not in checked:
            for sig in await self.signatures.list_signatures(name, digest):
                try:
                    keys = claimed_key_ids(sig.content)
                except SigningError:
                    keys = []
                views.append(
                    SignatureView(
                        "simple-signing",
                        f"signature {sig.name}",
                        None,
                        "stored; no policy rule of this repository checks simple signatures",
                        ", ".join(keys) or None,
                    )
                )
        if "cosign" not in checked:
            tag = f"{digest.algorithm}-{digest.hex}.sig"
            if await self.registry.metadata.get_manifest(name, tag) is not None:
                views.append(
                    SignatureView(
                        "cosign",
                        f"tag {tag}",
                        None,
                        "stored; no policy rule of this repository checks cosign signatures",
                    )
                )
            for ref in (await self.registry.referrers(name, digest, None)).descriptors:
                if ref.artifact_type and "sig" in ref.artifact_type:
                    views.append(
                        SignatureView(
                            "cosign" if "sigstore" in ref.artifact_type else "referrer",
                            f"referrer {ref.digest}",
                            None,
                            f"stored ({ref.artifact_type}); no policy rule checks it",
                        )
                    )
        if "notary" not in checked:
            for gun in self._guns(name):
                signed = await self._notary_tags(gun, str(digest))
                if signed:
                    views.append(
                        SignatureView(
                            "notary",
                            f"trust data {gun}",
                            None,
                            f"targets role lists it as {', '.join(signed)}; no policy rule "
                            "verifies it against pinned keys",
                        )
                    )
        return views

    # -- trust data ----------------------------------------------------------------------------
    def _guns(self, name: str) -> list[str]:
        return [prefix + name for prefix in self.gun_prefixes] + [name]

    async def _role(self, gun: str, role: str) -> dict[str, Any] | None:
        if self.trust is None:
            return None
        stored = await self.trust.get_file(gun, role)
        doc = _json(stored.data, role) if stored is not None else None
        signed = doc.get("signed") if isinstance(doc, dict) else None
        return signed if isinstance(signed, dict) else None

    async def _notary_tags(self, gun: str, digest: str) -> list[str]:
        signed = await self._role(gun, "targets")
        targets = signed.get("targets") if signed else None
        if not isinstance(targets, dict):
            return []
        algorithm, _, hexpart = digest.partition(":")
        out = []
        for tag, meta in targets.items():
            hashes = meta.get("hashes") if isinstance(meta, dict) else None
            value = hashes.get(algorithm) if isinstance(hashes, dict) else None
            try:
                if isinstance(value, str) and base64.b64decode(value).hex() == hexpart:
                    out.append(str(tag))
            except (binascii.Error, ValueError):
                continue
        return sorted(out)[:20]

    async def trust_data(self, name: str, visible: Visible) -> list[TrustView]:
        """Roles, keys and expiry of each GUN naming `name` that has trust data."""
        await self._require(name, visible)
        now = time.time()
        views = []
        for gun in self._guns(name):
            root = await self._role(gun, "root")
            if root is None:
                continue
            specs = _dict(root.get("roles"))
            roles: list[RoleView] = []
            delegations: list[RoleView] = []
            for role in ROLES:
                signed = root if role == "root" else await self._role(gun, role)
                roles.append(_role_view(role, signed, _dict(specs.get(role)), now))
                if role == "targets" and signed is not None:
                    for d in _dict(signed.get("delegations")).get("roles") or []:
                        if isinstance(d, dict):
                            delegations.append(_role_view(str(d.get("name")), None, d, now))
            views.append(TrustView(gun, roles, delegations))
        return views

    # -- writes --------------------------------------------------------------------------------
    async def delete_tag(self, name: str, tag: str, visible: Visible, actor: str | None) -> None:
        """Delete one tag (the caller's delete right is checked by the caller, as on /v2)."""
        await self._require(name, visible)
        await self.registry.delete_manifest(name, tag, actor=actor)

    # -- administration ------------------------------------------------------------------------
    async def accounts_and_rules(self) -> tuple[list[Account], list[AclRule]]:
        if self.accounts is None:
            return [], []
        return await self.accounts.list_accounts(), await self.accounts.list_rules()

    async def recent_audit(self, limit: int = 100) -> list[AuditEntry]:
        return await self.audit.query(AuditQuery(limit=limit)) if self.audit else []

    async def gc_dry_run(self) -> GcReport | None:
        return await self.gc_preview() if self.gc_preview else None
