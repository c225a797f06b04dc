"""The use cases' port for the figures operators watch (issue 21): cache lookups and policy
decisions. The use cases call it; `trustyard.http` implements it over prometheus-client, so no
use-case module imports prometheus. The default records nothing (the CLI, `metrics = false`).

Label values must be bounded: a cache's name, a configured rule's name, closed outcome sets;
never a repository name or a digest.
"""

from __future__ import annotations

from typing import Protocol

HIT, MISS = "hit", "miss"
ALLOWED, DENIED, WARNED = "allowed", "denied", "warned"  # warned: denied in a non-enforcing rule


class Telemetry(Protocol):
    def cache_lookup(self, cache: str, result: str) -> None:
        """One lookup in the cache named `cache`: `hit` or `miss`."""

    def policy_decision(self, rule: str, action: str, outcome: str) -> None:
        """The signature policy decided a `pull`/`push` under rule `rule`: allowed, denied,
        warned."""


class NoTelemetry:
    """Records nothing."""

    def cache_lookup(self, cache: str, result: str) -> None:
        return None

    def policy_decision(self, rule: str, action: str, outcome: str) -> None:
        return None
