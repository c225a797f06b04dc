"""Signature identities: does a signature's `docker-reference` name what is being pulled?

A signature by a trusted key over a digest says nothing about where that digest may be pulled
from unless its identity claim is checked too; without it a signature made for repository A
admits the same digest in repository B. The rules are containers/image's `signedIdentity`
(`matchRepoDigestOrExact`, `matchRepository`, `matchExact`), plus `digest-only` (no check, what
cosign's default verifier does).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.oci.reference import NAME_RE, is_valid_tag
from trustyard.registry.policy import PolicyConfigError

MATCH_MODES = ("repo-digest-or-exact", "repository", "exact", "digest-only")
_DOMAIN = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?$"
)


@dataclass(frozen=True)
class DockerReference:
    """A signature's `docker-reference`, normalized as containers/image does (docker.io)."""

    domain: str
    path: str
    tag: str | None
    digest: str | None


def parse_docker_reference(text: str) -> DockerReference:
    """`[domain/]path[:tag][@digest]`, Docker's rules for the domain; ValueError if malformed."""
    if not text or len(text) > 512:
        raise ValueError("empty or too long")
    name, _, digest = text.partition("@")
    if digest:
        try:
            Digest.parse(digest)
        except RegistryError:
            raise ValueError(f"bad digest {digest[:80]!r}") from None
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not is_valid_tag(tag):
            raise ValueError(f"bad tag {tag[:80]!r}")
    first, sep, rest = name.partition("/")
    if sep and (any(c in first for c in ".:") or first == "localhost" or first != first.lower()):
        domain, path = first, rest
        if not _DOMAIN.match(domain):
            raise ValueError(f"bad domain {domain[:80]!r}")
    else:
        domain, path = "docker.io", name
    if domain in ("docker.io", "index.docker.io") and "/" not in path:
        domain, path = "docker.io", f"library/{path}"
    if not NAME_RE.match(path):
        raise ValueError(f"bad repository {path[:80]!r}")
    return DockerReference(domain, path, tag, digest or None)


@dataclass(frozen=True)
class IdentityRule:
    """Whether a signature's `docker-reference` names what is being pulled (containers/image's
    `signedIdentity`; the registry does not know the host name clients use, so the domain is
    only compared when `hosts` is set)."""

    match: str
    hosts: tuple[str, ...] = ()

    @classmethod
    def from_spec(cls, spec: dict[str, Any], kind: str, default: str) -> IdentityRule:
        match = spec.get("match", default)
        if match not in MATCH_MODES:
            raise PolicyConfigError(f"{kind}: match must be one of {', '.join(MATCH_MODES)}")
        hosts = spec.get("hosts") or []
        if isinstance(hosts, str):
            hosts = [hosts]
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise PolicyConfigError(f"{kind}: hosts must be a list of registry host names")
        return cls(str(match), tuple(hosts))

    def mismatch(self, reference: str, repository: str, tag: str | None, digest: str) -> str | None:
        """None when `reference` names `repository` (at `tag`, or `digest` when pulled by
        digest) under this rule, else why not."""
        if self.match == "digest-only":
            return None
        shown = reference[:200]
        try:
            ref = parse_docker_reference(reference)
        except ValueError as exc:
            return f"signature identity {shown!r} is not an image reference ({exc})"
        if self.hosts and ref.domain not in self.hosts:
            return f"signature identity {shown!r} names registry {ref.domain}, not one of {', '.join(self.hosts)}"
        if ref.path != repository:
            return f"signature identity {shown!r} names repository {ref.path}, not {repository}"
        if self.match == "repository":
            return None
        if self.match == "repo-digest-or-exact" and tag is None:
            if ref.tag is None and ref.digest is None:
                return f"signature identity {shown!r} names no tag or digest (match = {self.match})"
            return None
        want = (tag, None) if tag is not None else (None, digest)
        if (ref.tag, ref.digest) != want:
            pulled = f"{repository}:{tag}" if tag is not None else f"{repository}@{digest}"
            return f"signature identity {shown!r} is not exactly {pulled} (match = {self.match})"
        return None

    def mismatch_any(
        self, reference: str, repositories: tuple[str, ...], tag: str | None, digest: str
    ) -> str | None:
        """`mismatch` against the one of `repositories` that `reference` names (a mirrored
        repository's own name or its upstream's, PolicyContext.identity_names), else against
        the first: why it names none of them."""
        try:
            path = parse_docker_reference(reference).path
        except ValueError:
            path = None
        repository = path if path in repositories else repositories[0]
        return self.mismatch(reference, repository, tag, digest)
