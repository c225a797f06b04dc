"""Retention: which tags rules let go, as pure code over a snapshot, and the run that deletes them.

A rule governs tags matching its tag patterns in repositories matching its repository pattern
(the first matching rule governs a tag; tags no rule matches are never touched). Of the tags a
rule governs in one repository it keeps the `keep_last` most recently pushed, and those pulled
(or pushed) within `keep_pulled_days`; the others are deleted, unless their manifest is signed
(a cosign `sha256-<hex>.sig|.att|.sbom` tag, a referrer, a simple signature, a target of the
repository's Notary collection), referenced (a child of an index) or the tag is immutable. Only tags go: their manifests and blobs are
collected by the normal GC afterwards (after the tag-history window).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from trustyard.metadata.lifecycle_base import RetentionSnapshot, RetentionTag, TagHistoryIndex
from trustyard.registry.export import TrustFiles
from trustyard.registry.gc_mark import attachment_subject
from trustyard.registry.lifecycle import ImmutableRule
from trustyard.trust import model as m

DAY = 86400.0
ACTOR = "retention"
MAX_NOTARY_ROLES = 256  # targets roles read per collection (delegations included)
NOTARY_SIGNED = "signed (Notary)"
NOTARY_UNREADABLE = "the repository's Notary trust data could not be read"


@dataclass(slots=True)
class NotarySigned:
    """What the Notary collections say: (repository, digest) pairs some targets role lists,
    and repositories whose trust data could not be read (all their tags are then kept)."""

    signed: set[tuple[str, str]] = field(default_factory=set)
    unreadable: set[str] = field(default_factory=set)


def _gun_repositories(gun: str, repositories: set[str]) -> list[str]:
    """The repositories a GUN covers: `host[:port]/repository` (what docker and notary use),
    or the repository name itself (a policy with an empty `gun_prefix`)."""
    return [r for r in {gun, gun.partition("/")[2]} if r in repositories]


async def notary_signed(trust: TrustFiles, repositories: set[str]) -> NotarySigned:
    """Read the targets roles (delegations too) of each GUN covering one of `repositories`.

    A manifest counts as signed when a target's sha256 is its digest: a Notary target of an
    image is its tag with the manifest's hash. Signatures are not verified here: retention
    keeps what someone published, it does not decide trust (the pull policy does).
    """
    found = NotarySigned()
    for gun in await trust.guns():
        covered = _gun_repositories(gun, repositories)
        if not covered:
            continue
        digests: set[str] = set()
        try:
            todo, seen = [m.TARGETS], 0
            while todo and seen < MAX_NOTARY_ROLES:
                role = todo.pop()
                seen += 1
                data = await trust.file(gun, role)
                if data is None:
                    continue
                parsed = m.parse_targets(role, data)
                for meta in parsed.targets.values():
                    if "sha256" in meta.hashes:
                        digests.add("sha256:" + meta.hashes["sha256"].hex())
                todo.extend(sorted(parsed.delegations))
            if todo:
                raise m.MetadataError(f"more than {MAX_NOTARY_ROLES} targets roles")
        except m.MetadataError:
            found.unreadable.update(covered)
            continue
        found.signed.update((r, d) for r in covered for d in digests)
    return found


@dataclass(frozen=True, slots=True)
class RetentionRule:
    repository: str
    tags: tuple[str, ...] = ("*",)
    keep_last: int | None = None
    keep_pulled_days: float | None = None

    def governs(self, repository: str, tag: str) -> bool:
        return fnmatchcase(repository, self.repository) and any(
            fnmatchcase(tag, p) for p in self.tags
        )


@dataclass(frozen=True, slots=True)
class Decision:
    repository: str
    tag: str
    digest: str
    delete: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "reason": self.reason,
        }


@dataclass(slots=True)
class RetentionReport:
    dry_run: bool
    decisions: list[Decision] = field(default_factory=list)
    ungoverned: int = 0  # tags no rule matches (left alone)
    deleted: int = 0  # tags actually deleted (a tag pushed since the snapshot is skipped)

    @property
    def to_delete(self) -> list[Decision]:
        return [d for d in self.decisions if d.delete]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "delete": [d.to_json() for d in self.to_delete],
            "keep": [d.to_json() for d in self.decisions if not d.delete],
            "ungoverned": self.ungoverned,
            "deleted": self.deleted,
        }


def _protected(
    snap: RetentionSnapshot,
    immutable: tuple[ImmutableRule, ...],
    tag: RetentionTag,
    notary: NotarySigned,
) -> str | None:
    key = (tag.repository, tag.digest)
    if any(r.matches(tag.repository, tag.tag) for r in immutable):
        return "immutable"
    if key in snap.signed:
        return "signed (referrer or simple signature)"
    if key in notary.signed:
        return NOTARY_SIGNED
    if tag.repository in notary.unreadable:
        return NOTARY_UNREADABLE
    if key in snap.children:
        return "referenced by an index"
    return None


def plan(
    snap: RetentionSnapshot,
    rules: tuple[RetentionRule, ...],
    immutable: tuple[ImmutableRule, ...],
    now: float,
    notary: NotarySigned | None = None,
) -> RetentionReport:
    """Decide every tag's fate (`dry_run` is the caller's to set)."""
    notary = notary or NotarySigned()
    report = RetentionReport(dry_run=True)
    cosigned = {
        (t.repository, subject)
        for t in snap.tags
        if (subject := attachment_subject(t.tag)) is not None
    }
    governed: dict[tuple[int, str], list[RetentionTag]] = defaultdict(list)
    for tag in snap.tags:
        if attachment_subject(tag.tag) is not None:
            continue  # attachments follow their subject (GC)
        index = next((i for i, r in enumerate(rules) if r.governs(tag.repository, tag.tag)), None)
        if index is None:
            report.ungoverned += 1
            continue
        governed[(index, tag.repository)].append(tag)
    for (index, _), tags in sorted(governed.items()):
        rule = rules[index]
        tags.sort(key=lambda t: (-t.pushed_at, t.tag))
        for rank, tag in enumerate(tags):
            reason = _protected(snap, immutable, tag, notary)
            if reason is None and (tag.repository, tag.digest) in cosigned:
                reason = "signed (cosign)"
            if reason is None and rule.keep_last is not None and rank < rule.keep_last:
                reason = f"among the {rule.keep_last} most recently pushed"
            used = max(tag.pushed_at, snap.pulled.get((tag.repository, tag.digest), 0.0))
            if (
                reason is None
                and rule.keep_pulled_days is not None
                and used >= now - rule.keep_pulled_days * DAY
            ):
                reason = f"pulled or pushed within {rule.keep_pulled_days:g} days"
            report.decisions.append(
                Decision(
                    tag.repository,
                    tag.tag,
                    tag.digest,
                    reason is None,
                    reason or f"rule {index + 1} ({rule.repository}) does not keep it",
                )
            )
    return report


async def run_retention(
    history: TagHistoryIndex,
    rules: tuple[RetentionRule, ...],
    immutable: tuple[ImmutableRule, ...],
    *,
    dry_run: bool,
    changed: Callable[[str], Awaitable[None]] | None = None,
    trust: TrustFiles | None = None,
) -> RetentionReport:
    """Plan, and unless `dry_run` delete the planned tags (each only if it did not move since).
    `trust`: the Notary collections, whose targets count as signed (None: no trust service)."""
    snap = await history.retention_snapshot()
    notary = None
    if trust is not None:
        governed = {
            t.repository for t in snap.tags if any(r.governs(t.repository, t.tag) for r in rules)
        }
        notary = await notary_signed(trust, governed) if governed else None
    report = plan(snap, rules, immutable, time.time(), notary)
    report.dry_run = dry_run
    if dry_run:
        return report
    touched: set[str] = set()
    for d in report.to_delete:
        if await history.delete_tag_if(d.repository, d.tag, d.digest, ACTOR):
            report.deleted += 1
            touched.add(d.repository)
    if changed is not None:
        for repository in sorted(touched):
            await changed(repository)
    return report
