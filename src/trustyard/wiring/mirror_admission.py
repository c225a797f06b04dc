"""Settings.mirrors + policy.rules -> the mirror's verified admission (registry/mirror_admission).

Two things, both only when mirrors are configured: the registry's own pull-path policy learns
which upstream name a mirrored repository's signatures may claim (`mirror_aliases`), and the
mirror gets an `Admission` that judges fetched manifests with the same rules before caching.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trustyard.config import Settings
from trustyard.registry.mirror_admission import (
    MirrorAdmission,
    MirrorNames,
    MirrorTrust,
    PolicyAdmission,
    identity_aliases,
    staged_context,
)
from trustyard.registry.mirror_notary import MirrorNotary, NotaryMirror
from trustyard.registry.policy import PolicyContext
from trustyard.registry.service import Registry
from trustyard.registry.signatures import SimpleSignatures
from trustyard.remote.credentials import Credentials


def mirror_names(settings: Settings) -> list[MirrorNames]:
    return [MirrorNames(m.prefix, m.upstream_prefix) for m in settings.mirrors]


def mirror_aliases(settings: Settings) -> Callable[[str], tuple[str, ...]] | None:
    """PolicyContext.identity_aliases for the configured mirrors; None without mirrors."""
    return identity_aliases(mirror_names(settings)) if settings.mirrors else None


def open_admission(
    settings: Settings,
    registry: Registry,
    signatures: SimpleSignatures | None,
    local: PolicyContext | None,
    notary: MirrorNotary | None = None,
) -> PolicyAdmission:
    """The policy-backed admission for `Mirrors.admission` (rules from settings.policy)."""
    ctx = staged_context(mirror_aliases(settings), local.audit if local else None, local, notary)
    admission = MirrorAdmission(
        [r.model_dump() for r in settings.policy.rules], ctx, registry, signatures, notary
    )
    trust = [
        MirrorTrust(MirrorNames(m.prefix, m.upstream_prefix), m.lookaside, tuple(m.signatures))
        for m in settings.mirrors
    ]
    return PolicyAdmission(admission, trust)


def mirror_trust_dir(settings: Settings) -> Path:
    """Where the verified upstream trust data of mirrored repositories is kept."""
    return settings.data_dir / "mirror-trust"


def open_mirror_notary(settings: Settings) -> MirrorNotary:
    """Each mirror's trust server (`trust_server`, else `upstream`) with the mirror's
    credentials and TLS settings, and the directory the verified copies are kept in."""
    mirrors, closing = [], []
    for m in settings.mirrors:
        # The upstream client brings httpx: imported only where mirrors are configured.
        from trustyard.remote.upstream import UpstreamRegistry
        from trustyard.remote.upstream_trust import UpstreamTrustFiles

        secret = m.secret()
        credentials = Credentials(m.username, secret or "") if m.username is not None else None
        server = m.trust_server or m.upstream
        client = UpstreamRegistry(
            server,
            credentials=credentials,
            tls_verify=m.tls_verify,
            ca_file=m.ca_file,
            timeout=m.timeout_seconds,
        )
        closing.append(client.aclose)
        mirrors.append(
            NotaryMirror(
                MirrorNames(m.prefix, m.upstream_prefix),
                m.notary_gun_prefix(),
                UpstreamTrustFiles(client),
                m.ttl_seconds,
                server.rstrip("/"),
            )
        )
    return MirrorNotary(mirrors, mirror_trust_dir(settings), closing)


def uses_notary(settings: Settings) -> bool:
    """Whether any policy rule requires `notary` (else no trust server client is opened)."""

    def walk(spec: object) -> bool:
        if isinstance(spec, dict):
            return spec.get("kind") == "notary" or any(walk(v) for v in spec.values())
        if isinstance(spec, list | tuple):
            return any(walk(v) for v in spec)
        return False

    return any(walk(rule.require) for rule in settings.policy.rules)
