"""Readiness: can this process reach what it serves from right now?

`/readyz` (http/operations.py) asks these probes, each bounded by a timeout, all at once: the
database (`SELECT 1` on the reader pool), the blob storage (a stat of a digest nobody stores:
"absent" is a healthy answer) and Redis when configured. A probe that raises or times out is
"down"; the reason is the error's kind and first line, with any URL credentials cut out.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from trustyard.oci.digest import Digest
from trustyard.wiring.services import Services

Probe = Callable[[], Awaitable[object]]
PROBE_TIMEOUT_SECONDS = 2.0
# Well-formed, and no content hashes to it: the store answers "absent" when it is reachable.
_NOBODYS_DIGEST = Digest.parse("sha256:" + "0" * 64)
_CREDENTIALS = re.compile(r"://[^/@\s]*@")


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]  # name → "ok" | "down: why"

    @property
    def ready(self) -> bool:
        return all(v == "ok" for v in self.checks.values())


def probes(services: Services) -> dict[str, Probe]:
    found: dict[str, Probe] = {"database": services.database.ping}
    storage = services.storage
    if storage is not None:
        found["storage"] = lambda: storage.stat(_NOBODYS_DIGEST)
    cache = services.cache
    if cache is not None and services.settings.redis_url:
        found["redis"] = lambda: cache.get("trustyard:readyz")
    return found


def _why(exc: BaseException, seconds: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {seconds:g} s"
    first = (str(exc).strip().splitlines() or [""])[0]
    first = _CREDENTIALS.sub("://", first)[:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


async def _run(probe: Probe, seconds: float) -> str:
    try:
        await asyncio.wait_for(probe(), seconds)
    except Exception as exc:
        return f"down: {_why(exc, seconds)}"
    return "ok"


async def readiness(checks: dict[str, Probe], seconds: float = PROBE_TIMEOUT_SECONDS) -> Readiness:
    names = list(checks)
    answers = await asyncio.gather(*(_run(checks[n], seconds) for n in names))
    return Readiness(dict(zip(names, answers, strict=True)))
