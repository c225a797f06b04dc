"""Registry policy decisions as trust audit events (the trust store's audit log).

`registry.policy.Policy` calls this once per decision (pull of a protected repository, push to a
protected tag) after its `policy_decision` log event: one write through the `AuditSink` port
(one INSERT on SQL, the same cost as the registry's own tag writes). The event's `gun` is the
repository, `action` is `policy_pull` / `policy_push`, `actor` the requester of the request being
served (`metadata.audit_base.current_request`, set by the HTTP access check; `registry-policy`
outside a request), `detail` the decision: policy, kind, mode, allowed, reason, signer,
reference, digest, and the client address. `trustyard audit` reads these rows as its `policy`
action (metadata/audit_sql.py bridges the table), so decisions are stored once.
"""

from __future__ import annotations

from typing import Any

from trustyard.metadata.audit_base import current_request
from trustyard.trust.store import AuditEvent, AuditSink

ACTOR = "registry-policy"


class PolicyAudit:
    def __init__(self, sink: AuditSink) -> None:
        self.sink = sink

    async def __call__(self, repository: str, event: dict[str, Any]) -> None:
        action = f"policy_{event.get('action', 'check')}"
        request = current_request.get()
        actor, detail = ACTOR, event
        if request is not None:
            actor, detail = request.actor, {**event, "client": request.client}
        await self.sink.record_audit(AuditEvent(action, repository, actor, detail))
