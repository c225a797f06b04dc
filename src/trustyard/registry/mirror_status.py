"""`trustyard mirror status`: each mirror's upstream health and what its cache holds."""

from __future__ import annotations

from dataclasses import dataclass

from trustyard.metadata.lifecycle_base import NamespaceUsage
from trustyard.registry.mirror import Mirrors
from trustyard.remote.upstream_errors import UpstreamUnavailable


@dataclass(frozen=True, slots=True)
class UpstreamHealth:
    url: str
    up: bool
    latency_ms: float | None
    detail: str


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    prefix: str
    upstream_prefix: str
    upstreams: list[UpstreamHealth]
    repositories: int
    manifests: int
    bytes: int


async def mirror_status(mirrors: Mirrors, usage: NamespaceUsage) -> list[MirrorStatus]:
    """Each mirror's upstreams (reachable? how fast?) and what its cache holds."""
    repositories: list[str] = []
    last: str | None = None
    while True:
        page = await mirrors.registry.metadata.list_repositories(1000, last)
        repositories += page
        if len(page) < 1000:
            break
        last = page[-1]
    out = []
    for mirror in mirrors.mirrors:
        mine = [r for r in repositories if mirror.covers(r)]
        manifests = 0
        for repository in mine:
            last = None
            while True:
                page = await mirrors.registry.metadata.list_manifests(repository, 1000, last)
                manifests += len(page)
                if len(page) < 1000:
                    break
                last = page[-1]
        health = []
        for upstream in mirror.upstreams:
            try:
                code, seconds = await upstream.ping()
                up = code in (200, 401)
                health.append(
                    UpstreamHealth(upstream.base_url, up, round(seconds * 1000, 1), f"HTTP {code}")
                )
            except UpstreamUnavailable as exc:
                health.append(UpstreamHealth(upstream.base_url, False, None, str(exc)))
        out.append(
            MirrorStatus(
                mirror.prefix,
                mirror.upstream_prefix,
                health,
                len(mine),
                manifests,
                await usage.namespace_usage(mirror.prefix),
            )
        )
    return out
