"""Retention decisions (registry/retention.py) on hand-built snapshots."""

from __future__ import annotations

import hashlib

from trustyard.metadata.lifecycle_base import RetentionSnapshot, RetentionTag
from trustyard.registry.lifecycle import ImmutableRule
from trustyard.registry.retention import DAY, RetentionRule, plan

NOW = 100 * DAY


def d(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def tags(repo: str, n: int) -> list[RetentionTag]:
    """n tags t0..t{n-1}, t0 the oldest push, each on its own manifest."""
    return [RetentionTag(repo, f"t{i}", d(f"{repo}{i}"), NOW - (n - i) * DAY) for i in range(n)]


def deleted(snap: RetentionSnapshot, *rules: RetentionRule, immutable=()) -> set[str]:  # type: ignore[no-untyped-def]
    report = plan(snap, rules, tuple(immutable), NOW)
    return {f"{x.repository}:{x.tag}" for x in report.to_delete}


def test_keep_last_per_repository_and_ungoverned_tags_alone() -> None:
    snap = RetentionSnapshot(tags("team/a", 5) + tags("team/b", 2) + tags("other/c", 5))
    gone = deleted(snap, RetentionRule("team/*", keep_last=2))
    assert gone == {"team/a:t0", "team/a:t1", "team/a:t2"}
    report = plan(snap, (RetentionRule("team/*", keep_last=2),), (), NOW)
    assert report.ungoverned == 5 and len(report.decisions) == 7


def test_keep_pulled_within_days_counts_pushes_too() -> None:
    snap = RetentionSnapshot(tags("r", 5))  # pushed 5..1 days ago
    assert deleted(snap, RetentionRule("r", keep_pulled_days=2.5)) == {"r:t0", "r:t1", "r:t2"}
    snap.pulled[("r", d("r0"))] = NOW - DAY  # t0 was pulled yesterday
    assert deleted(snap, RetentionRule("r", keep_pulled_days=2.5)) == {"r:t1", "r:t2"}
    # both limits: a tag is kept when either keeps it
    assert deleted(snap, RetentionRule("r", keep_last=3, keep_pulled_days=2.5)) == {"r:t1"}


def test_signed_referenced_and_immutable_content_always_kept() -> None:
    all_tags = tags("r", 6)
    cosign = RetentionTag("r", d("r1").replace(":", "-") + ".sig", d("sig"), NOW - 9 * DAY)
    snap = RetentionSnapshot(
        [*all_tags, cosign],
        signed={("r", d("r2"))},  # a referrer or a simple signature names it
        children={("r", d("r3"))},  # a child of an index
    )
    gone = deleted(snap, RetentionRule("r", keep_last=0), immutable=[ImmutableRule("r", ("t4",))])
    assert gone == {"r:t0", "r:t5"}  # the .sig tag itself is not governed either
    reasons = {
        x.tag: x.reason for x in plan(snap, (RetentionRule("r", keep_last=0),), (), NOW).decisions
    }
    assert reasons["t1"] == "signed (cosign)" and reasons["t3"] == "referenced by an index"


def test_first_matching_rule_governs() -> None:
    snap = RetentionSnapshot(tags("r", 4))
    rules = (RetentionRule("r", ("t3",), keep_last=0), RetentionRule("r", keep_last=10))
    assert deleted(snap, *rules) == {"r:t3"}
