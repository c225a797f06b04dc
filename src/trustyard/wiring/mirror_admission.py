"""Settings.mirrors + policy.rules -> the mirror's verified admission (registry/mirror_admission).

Two things, both only when mirrors are configured: the registry's own pull-path policy learns
which upstream name a mirrored repository's signatures may claim (`mirror_aliases`), and the
mirror gets an `Admission` that judges fetched manifests with the same rules before caching.
"""

from __future__ import annotations

from collections.abc import Callable

from trustyard.config import Settings
from trustyard.registry.mirror_admission import (
    MirrorAdmission,
    MirrorNames,
    MirrorTrust,
    PolicyAdmission,
    identity_aliases,
    staged_context,
)
from trustyard.registry.policy import PolicyContext
from trustyard.registry.service import Registry
from trustyard.registry.signatures import SimpleSignatures


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
) -> PolicyAdmission:
    """The policy-backed admission for `Mirrors.admission` (rules from settings.policy)."""
    ctx = staged_context(mirror_aliases(settings), local.audit if local else None, local)
    admission = MirrorAdmission(
        [r.model_dump() for r in settings.policy.rules], ctx, registry, signatures
    )
    trust = [
        MirrorTrust(MirrorNames(m.prefix, m.upstream_prefix), m.lookaside, tuple(m.signatures))
        for m in settings.mirrors
    ]
    return PolicyAdmission(admission, trust)
