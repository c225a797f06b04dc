"""The Notary targets that sign one image, as `trustyard signatures` lists them.

The collection is fetched and verified exactly as `trustyard trust verify` does
(`TrustClient.fetch`: pins, the cached root, signatures and thresholds from the root down through
the delegations); then every verified target whose sha256 is the image's manifest digest is
listed, and, when the image was named by tag, the targets for that tag that sign another digest
(the tag moved after signing). A GUN without trust data lists nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trustyard.trust import model as m
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.pinning import canonical_key_id
from trustyard.trust.client.repository import TrustClient
from trustyard.trust.client.verify import Collection, TargetHit

VERIFIED = "verified"
TAG_MOVED = "tag-moved"
FAILED = "failed"
UNVERIFIABLE = "unverifiable"

ROOT_TRUST = {
    "certs": "root key pinned (trust_pinning.certs / trust key import)",
    "ca": "root certificate issued by the pinned CA",
    "tofu": "root trusted on first use (TOFU, not pinned)",
}


@dataclass(frozen=True)
class NotaryTarget:
    gun: str
    status: str  # verified | tag-moved | failed | unverifiable
    name: str | None = None  # the target (tag) name
    role: str | None = None
    digest: str | None = None  # sha256:… the target signs
    size: int | None = None
    key_ids: tuple[str, ...] = ()  # the key IDs as the role lists them
    canonical_key_ids: tuple[str, ...] = ()
    root_trusted_by: str | None = None  # certs | ca | tofu
    reason: str = ""
    warnings: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "gun": self.gun,
            "target": self.name,
            "role": self.role,
            "digest": self.digest,
            "size": self.size,
            "key_ids": list(self.key_ids),
            "canonical_key_ids": list(self.canonical_key_ids),
            "root_trusted_by": self.root_trusted_by,
            "reason": self.reason,
            "warnings": list(self.warnings),
        }


def _target(coll: Collection, name: str, hit: TargetHit, status: str, reason: str) -> NotaryTarget:
    keys = coll.keys.get(hit.role, {})
    signers = tuple(k for k in hit.signers if k in keys)
    return NotaryTarget(
        gun=coll.gun,
        status=status,
        name=name,
        role=hit.role,
        digest=f"sha256:{hit.sha256}" if hit.sha256 else None,
        size=hit.meta.length,
        key_ids=signers,
        canonical_key_ids=tuple(canonical_key_id(keys[k]) for k in signers),
        root_trusted_by=coll.trust.how,
        reason=reason,
        warnings=tuple(coll.warnings),
    )


def image_targets(
    client: TrustClient, gun: str, sha256_hex: str, size: int, tag: str | None
) -> list[NotaryTarget]:
    """The Notary targets of `gun` for this manifest (and its tag); [] without trust data.

    A collection that exists but does not verify (a pin refuses its root, a bad signature, an
    expired role…) is one `failed` entry with the reason; a trust server that cannot be asked
    is one `unverifiable` entry.
    """
    try:
        if client.get_file(gun, m.ROOT) is None:
            return []
    except TrustError as exc:
        return [NotaryTarget(gun, UNVERIFIABLE, reason=str(exc))]
    try:
        coll = client.fetch(gun)
    except TrustError as exc:
        return [NotaryTarget(gun, FAILED, reason=str(exc))]
    found: list[NotaryTarget] = []
    for name, hit in coll.by_digest(sha256_hex):
        if hit.meta.length != size:
            found.append(
                _target(
                    coll,
                    name,
                    hit,
                    FAILED,
                    f"signed size {hit.meta.length} is not the manifest's {size} bytes",
                )
            )
        else:
            found.append(_target(coll, name, hit, VERIFIED, ""))
    if tag is not None:
        for hit in coll.lookup(tag):
            if hit.sha256 != sha256_hex:
                found.append(
                    _target(
                        coll,
                        tag,
                        hit,
                        TAG_MOVED,
                        f"tag moved after signing: {hit.role} signs {tag} as sha256:{hit.sha256}"
                        f", the registry serves sha256:{sha256_hex}",
                    )
                )
    return found
