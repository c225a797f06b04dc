"""Registry policy decisions as trust audit events (the trust store's audit log).

`registry.policy.Policy` calls this once per decision (pull of a protected repository, push to a
protected tag) after its `policy_decision` log event: one write through the `AuditSink` port
(one INSERT on SQL, the same cost as the registry's own tag writes). The event's `gun` is the
repository, `action` is `policy_pull` / `policy_push`, `actor` is `registry-policy` (the policy
is not told who made the request; the access log has that), `detail` the decision: policy,
kind, mode, allowed, reason, signer, reference, digest.
"""

from __future__ import annotations

from typing import Any

from trustyard.trust.store import AuditEvent, AuditSink

ACTOR = "registry-policy"


class PolicyAudit:
    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink

    async def __call__(self, repository: str, event: dict[str, Any]) -> None:
        action = f"policy_{event.get('action', 'check')}"
        await self.sink.record_audit(AuditEvent(action, repository, ACTOR, event))
