"""The authorization graph the authority's statements build (seed 003, "Verification").

A signing key is trusted for an image when a statement, signed by an authority whose x509 chain
ends at a root the *client* chose, links the key to a user and the user to the image's namespace.
`authority/statements.py` issues and checks statements and turns a set of them into a `Graph`;
the policy kind `authority` and `trustyard verify` only ask the `Graph`. Pure: no I/O.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

KeyType = Literal["pkix", "openpgp"]


@dataclass(frozen=True)
class GrantedKey:
    """A public key the authority linked to `user`, and the namespaces `user` may sign for."""

    key_id: (
        str  # libtrust KeyID for pkix keys ("ABCD:EFGH:…"); OpenPGP v4 fingerprint (40 hex, upper)
    )
    key_type: KeyType
    public: bytes  # PEM SubjectPublicKeyInfo, or an ASCII-armored OpenPGP public key
    user: str
    namespaces: tuple[str, ...]  # globs over repository names: "team/*", "team/app"
    statement: str  # id of the granting statement
    authority: str  # subject of the certificate that signed the statement
    expires: datetime | None = None

    def covers(self, repository: str) -> bool:
        """Whether one of the granted namespaces matches `repository` (whole-name glob)."""
        return any(fnmatch.fnmatchcase(repository, ns) for ns in self.namespaces)


@dataclass(frozen=True)
class Refusal:
    """A statement that does not count, and why ("expired on …", "revoked by …", "chain …")."""

    statement: str
    reason: str
    key_id: str | None = None


@dataclass(frozen=True)
class Graph:
    """What a set of statements, checked against chosen roots at one moment, grants."""

    grants: tuple[GrantedKey, ...] = ()
    refused: tuple[Refusal, ...] = field(default=())

    def keys_for(self, repository: str) -> list[GrantedKey]:
        """Granted keys whose user may sign for `repository`."""
        return [g for g in self.grants if g.covers(repository)]

    def why_not(self, key_id: str, repository: str) -> str:
        """A person-readable reason why `key_id` is not authorized for `repository`."""
        held = [g for g in self.grants if g.key_id == key_id]
        if held:
            spaces = ", ".join(sorted({ns for g in held for ns in g.namespaces}))
            users = ", ".join(sorted({g.user for g in held}))
            return f"key {key_id} is granted to {users} for {spaces}, not for {repository}"
        refusals = [r for r in self.refused if r.key_id == key_id]
        if refusals:
            return "; ".join(f"statement {r.statement}: {r.reason}" for r in refusals)
        return f"no statement grants key {key_id}"
