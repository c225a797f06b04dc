"""Retention: which tags rules let go, as pure code over a snapshot, and the run that deletes them.

A rule governs tags matching its tag patterns in repositories matching its repository pattern
(the first matching rule governs a tag; tags no rule matches are never touched). Of the tags a
rule governs in one repository it keeps the `keep_last` most recently pushed, and those pulled
(or pushed) within `keep_pulled_days`; the others are deleted, unless their manifest is signed
(a cosign `sha256-<hex>.sig|.att|.sbom` tag, a referrer, a simple signature), referenced (a
child of an index) or the tag is immutable. Only tags go: their manifests and blobs are
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
from trustyard.registry.gc_mark import attachment_subject
from trustyard.registry.lifecycle import ImmutableRule

DAY = 86400.0
ACTOR = "retention"


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
    snap: RetentionSnapshot, immutable: tuple[ImmutableRule, ...], tag: RetentionTag
) -> str | None:
    key = (tag.repository, tag.digest)
    if any(r.matches(tag.repository, tag.tag) for r in immutable):
        return "immutable"
    if key in snap.signed:
        return "signed (referrer or simple signature)"
    if key in snap.children:
        return "referenced by an index"
    return None


def plan(
    snap: RetentionSnapshot,
    rules: tuple[RetentionRule, ...],
    immutable: tuple[ImmutableRule, ...],
    now: float,
) -> RetentionReport:
    """Decide every tag's fate (`dry_run` is the caller's to set)."""
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
            reason = _protected(snap, immutable, tag)
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
) -> RetentionReport:
    """Plan, and unless `dry_run` delete the planned tags (each only if it did not move since)."""
    report = plan(await history.retention_snapshot(), rules, immutable, time.time())
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
