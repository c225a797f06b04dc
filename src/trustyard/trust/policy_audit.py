"""Registry policy decisions as trust audit events (the `trust_audit` table).

`registry.policy.Policy` calls this once per decision (pull of a protected repository, push to a
protected tag) after its `policy_decision` log event: one INSERT on the writer engine, the same
cost as the registry's own tag writes. The row's `gun` is the repository, `action` is
`policy_pull` / `policy_push`, `actor` is `registry-policy` (the policy is not told who made
the request; the access log has that), `detail` the decision: policy, kind, mode, allowed,
reason, signer, reference, digest.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from trustyard.metadata.trust_sql import trust_audit

ACTOR = "registry-policy"


class PolicyAudit:
    def __init__(self, writer: AsyncEngine) -> None:
        self.writer = writer

    async def __call__(self, repository: str, event: dict[str, Any]) -> None:
        async with self.writer.begin() as conn:
            await conn.execute(
                insert(trust_audit).values(
                    created_at=time.time(),
                    gun=repository[:255],
                    action=f"policy_{event.get('action', 'check')}"[:32],
                    actor=ACTOR,
                    detail=json.dumps(event, sort_keys=True, default=str),
                )
            )
