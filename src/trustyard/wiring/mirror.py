"""Settings.mirrors -> the pull-through `Mirrors` use case, with one upstream client per URL."""

from __future__ import annotations

from trustyard.config import Settings
from trustyard.registry import Registry
from trustyard.registry.mirror import Mirror, Mirrors
from trustyard.remote.credentials import Credentials


def open_mirrors(settings: Settings, registry: Registry) -> Mirrors | None:
    """The configured mirrors, or None (the normal path then pays nothing for them)."""
    if not settings.mirrors:
        return None
    from trustyard.remote.upstream import UpstreamRegistry  # brings httpx: only when configured

    mirrors = []
    for m in settings.mirrors:
        secret = m.secret()
        credentials = Credentials(m.username, secret or "") if m.username is not None else None
        upstreams = [
            UpstreamRegistry(
                url,
                credentials=credentials,
                tls_verify=m.tls_verify,
                ca_file=m.ca_file,
                timeout=m.timeout_seconds,
                max_manifest_bytes=settings.max_manifest_bytes,
            )
            for url in (m.upstream, *m.fallbacks)
        ]
        mirrors.append(Mirror(m.prefix, upstreams, m.upstream_prefix, m.ttl_seconds))
    return Mirrors(registry, mirrors)
