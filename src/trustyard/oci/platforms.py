"""Which children of an index must already be in the repository when the index is pushed.

Distribution 3's `validation.manifests.indexes.platforms`: `all` (the default: every child must
exist, so a pushed index never dangles), `none` (no child is checked), or a list of
`os/arch[/variant]` for operators who mirror only some platforms of a multi-platform image.
With a list, a child without a `platform` (attestations, artifacts) must still exist, as in
Distribution: only a child whose platform is known and not listed may be missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_PART = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`os/arch` or `os/arch/variant`, e.g. `linux/arm64/v8`; raises ValueError."""
        parts = text.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(_PART.match(p) for p in parts):
            raise ValueError(
                f"{text[:60]!r} is not a platform: write os/arch or os/arch/variant, "
                "e.g. linux/amd64 or linux/arm64/v8"
            )
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, platform: dict[str, Any]) -> bool:
        """A listed platform without a variant matches every variant of its os/arch."""
        return (
            str(platform.get("os", "")).lower() == self.os
            and str(platform.get("architecture", "")).lower() == self.architecture
            and (self.variant is None or str(platform.get("variant", "")).lower() == self.variant)
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class IndexPlatforms:
    """`all`, `none`, or the platforms whose children must exist."""

    check: bool = True
    only: tuple[Platform, ...] = ()  # empty with check=True: every child

    @classmethod
    def parse(cls, value: str | list[str] | tuple[str, ...]) -> IndexPlatforms:
        """`"all"`, `"none"`, `"linux/amd64,linux/arm64/v8"` or a list; raises ValueError."""
        if isinstance(value, str):
            word = value.strip().lower()
            if word in ("all", ""):
                return cls()
            if word == "none":
                return cls(check=False)
            items: list[str] = [p for p in value.split(",") if p.strip()]
        else:
            items = list(value)
        if not items:
            raise ValueError("an empty platform list: use 'all', 'none' or os/arch[/variant],…")
        return cls(only=tuple(Platform.parse(p) for p in items))

    def must_exist(self, platform: dict[str, Any] | None) -> bool:
        if not self.check:
            return False
        if not self.only or not platform:
            return True
        return any(p.matches(platform) for p in self.only)

    def __str__(self) -> str:
        if not self.check:
            return "none"
        return ",".join(str(p) for p in self.only) if self.only else "all"


ALL_PLATFORMS = IndexPlatforms()
