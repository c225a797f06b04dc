"""The last verified copy of every role, kept in the trust directory as Notary's client keeps it.

`tuf/<gun>/metadata/<role>.json`: later roots must be signed by the trusted root, and no role may
go back to an older version or change at the same version.
"""

from __future__ import annotations

import os
from pathlib import Path

from trustyard.trust import model as m


class TrustedFiles:
    """The trusted copies under one trust directory, per GUN."""

    def __init__(self, trust_dir: Path) -> None:
        self.trust_dir = trust_dir

    def _metadata_dir(self, gun: str) -> Path:
        return self.trust_dir / "tuf" / gun / "metadata"

    def write(self, gun: str, role: str, data: bytes) -> None:
        """Replace one role's copy atomically."""
        path = self._metadata_dir(gun) / f"{role}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def remember(self, gun: str, verified: dict[str, bytes]) -> None:
        for role, data in verified.items():
            self.write(gun, role, data)

    def read(self, gun: str) -> dict[str, bytes]:
        """The last verified copy of every role of `gun` (role → bytes)."""
        base = self._metadata_dir(gun)
        found: dict[str, bytes] = {}
        if not base.is_dir():
            return found
        for path in base.rglob("*.json"):
            role = path.relative_to(base).as_posix().removesuffix(".json")
            if m.valid_role(role):
                found[role] = path.read_bytes()
        return found

    def forget(self, gun: str) -> None:
        """Drop the trusted copies of `gun` (before `init` makes a new collection)."""
        base = self._metadata_dir(gun)
        if base.is_dir():
            for path in sorted(base.rglob("*.json"), reverse=True):
                path.unlink()
