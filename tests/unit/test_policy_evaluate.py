"""`registry.policy.evaluate`: the web UI's verdict runs a rule's checks like a pull would, but
audits, logs and raises nothing; any-of / all-of are opened into their checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.registry.policy import (
    Decision,
    PolicyContext,
    Verdict,
    build_policy,
    evaluate,
    register_kind,
)

RECORD = ManifestRecord("team/app", Digest.of(b"{}"), "application/json", 2, b"{}")


class Fixed:
    """A check kind answering what its spec says (or raising)."""

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        self.kind = str(spec["kind"])
        self.answer = spec.get("ok")

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        if self.answer is None:
            raise RuntimeError("boom")
        return Decision(bool(self.answer), f"{self.kind} said {self.answer} for {tag}", "k1")


for _name in ("t-yes", "t-no", "t-raise"):
    register_kind(_name, Fixed)


def verdict(rules: list[dict[str, Any]], tag: str | None = "v1") -> tuple[Verdict, list[Any]]:
    audited: list[Any] = []

    async def audit(repository: str, event: dict[str, Any]) -> None:
        audited.append(event)

    async def none(*_: Any) -> None:
        return None

    policy = build_policy(rules, PolicyContext(none, none, audit=audit))
    return asyncio.run(evaluate(policy, "team/app", RECORD, tag)), audited


def test_no_rule_is_served_without_checks() -> None:
    result, audited = verdict(
        [{"name": "other", "repositories": ["x/*"], "require": {"kind": "t-no", "ok": False}}]
    )
    assert result == Verdict(served=True)
    assert audited == []


@pytest.mark.parametrize(("mode", "served"), [("enforce", False), ("warn", True)])
def test_a_failed_rule_refuses_in_enforce_mode_only(mode: str, served: bool) -> None:
    rules = [{"name": "r", "mode": mode, "require": {"kind": "t-no", "ok": False}}]
    result, audited = verdict(rules)
    assert (result.served, result.rule, result.mode, result.kind) == (served, "r", mode, "t-no")
    assert result.decision == Decision(False, "t-no said False for v1", "k1")
    assert result.checks == (("t-no", result.decision),)
    assert audited == []  # nothing recorded, nothing raised


def test_any_of_is_opened_into_its_checks_and_a_raising_check_fails_closed() -> None:
    """As on a pull, a check that raises fails the whole rule (any-of does not catch it); the
    per-check view still shows which part broke and which would have passed."""
    require = {
        "kind": "any-of",
        "of": [{"kind": "t-raise"}, {"kind": "t-yes", "ok": True}],
    }
    result, audited = verdict([{"name": "r", "require": require}], tag=None)
    assert not result.served
    assert result.decision == Decision(False, "check failed: RuntimeError")
    assert [(kind, d.ok) for kind, d in result.checks] == [("t-raise", False), ("t-yes", True)]
    assert result.checks[0][1].reason == "check failed: RuntimeError"
    assert result.checks[1][1].reason == "t-yes said True for None"
    assert audited == []
